"""CRIU detection (published in ServerlessNode capabilities), with the real CRIU 4
that hack/install-criu.sh installs (Debian forky's, through a private prefix)."""

from __future__ import annotations

import time

from serverlessos_agent.criu import CriuInfo, detect, parse_version
from serverlessos_agent.registration import NodeFacts, node_status
from serverlessos_agent.stats import NodeSample, Pressure


def test_version_parsing() -> None:
    assert parse_version("Version: 4.1.1\n") == "4.1.1"
    assert parse_version("Version: 3.17\nGitID: v3.17\n") == "3.17"
    assert parse_version("nothing here") is None


def test_no_criu_is_none() -> None:
    assert detect("/no/such/criu") is None


def test_capabilities_carry_criu() -> None:
    info = CriuInfo("/x/criu", "4.1.1", True, ["lazy-pages"])
    sample = NodeSample(
        time.time(), 2000, 0.5, 8 * 2**30, 4 * 2**30, Pressure(), Pressure(), Pressure()
    )
    status = node_status(NodeFacts("n1", "10.0.0.1:7420", "v1", True, info), sample, 3, True)
    assert status["capabilities"]["criu"] == {
        "version": "4.1.1",
        "usable": True,
        "features": ["lazy-pages"],
        "problem": "",
    }
    assert status["allocatable"] == {"cpu": "2", "memory": "8Gi"}
    assert status["pressure"]["cpuFree"] == "1500m"
    assert (
        "criu" not in node_status(NodeFacts("n1", "e", "v1", True), sample, 0, True)["capabilities"]
    )
