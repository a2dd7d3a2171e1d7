"""CRIU detection (published in ServerlessNode capabilities: see test_observe.py)."""

from __future__ import annotations

from serverlessos_agent.migration.criu import detect, parse_version


def test_version_parsing() -> None:
    assert parse_version("Version: 4.1.1\n") == "4.1.1"
    assert parse_version("Version: 3.17\nGitID: v3.17\n") == "3.17"
    assert parse_version("nothing here") is None


def test_no_criu_is_none() -> None:
    assert detect("/no/such/criu") is None
