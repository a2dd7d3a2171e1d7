"""CRIU detection (published in ServerlessNode capabilities: see test_observe.py)."""

from __future__ import annotations

import pytest
from serverlessos_agent.errors import FailedPrecondition
from serverlessos_agent.runtime.criu import CriuInfo, detect, parse_version, usable_binary


def test_version_parsing() -> None:
    assert parse_version("Version: 4.1.1\n") == "4.1.1"
    assert parse_version("Version: 3.17\nGitID: v3.17\n") == "3.17"
    assert parse_version("nothing here") is None


def test_no_criu_is_none() -> None:
    assert detect("/no/such/criu") is None


def test_a_migration_step_names_what_is_missing() -> None:
    assert usable_binary(CriuInfo("/x/criu", "4.2", True), "n1") == "/x/criu"
    with pytest.raises(FailedPrecondition, match="node n1 has no CRIU: it cannot migrate"):
        usable_binary(None, "n1")
    with pytest.raises(FailedPrecondition, match="CRIU on node n1 is not usable: no uffd"):
        usable_binary(CriuInfo("/x/criu", "4.2", False, problem="no uffd"), "n1")
