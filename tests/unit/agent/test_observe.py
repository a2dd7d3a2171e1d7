"""What the agent measures and reports, called directly: PSI, meminfo, the
ServerlessNode status (without Kubernetes)."""

from __future__ import annotations

import subprocess
import sys
import time

from serverlessos_agent.observe.node_status import NodeFacts, node_status
from serverlessos_agent.observe.stats import (
    NodeSample,
    Pressure,
    cpu_times,
    parse_meminfo,
    parse_pressure,
)
from serverlessos_agent.runtime.criu import CriuInfo


def test_psi_and_meminfo_parsing() -> None:
    p = parse_pressure(
        "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n"
        "full avg10=0.20 avg60=0.05 avg300=0.00 total=789\n"
    )
    assert (p.some_avg10, p.some_avg60, p.full_avg10, p.full_avg60) == (1.5, 0.75, 0.2, 0.05)
    assert (p.some_total_us, p.full_total_us) == (123456, 789)
    cpu_only = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    assert cpu_only.full_total_us == 0
    info = parse_meminfo("MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 16384 * 1024, "MemAvailable": 8192 * 1024, "HugePages_Total": 0}
    busy, total = cpu_times()
    assert 0 <= busy <= total


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


def test_an_agent_that_does_not_register_never_loads_kubernetes() -> None:
    code = (
        "import sys, serverlessos_agent.daemon, serverlessos_agent.cli.main, "
        "serverlessos_agent.observe.node_status; print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
