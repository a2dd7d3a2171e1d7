"""Rebalancing on the local cluster: a node made hot by a CPU hog outside the platform
sheds its Auto-policy processes (real ProcessMigrations, real CRIU), once each, and
nothing moves back and forth afterwards.

The hog is a plain process put into the hot node's cgroup subtree (each local node
is one: hack/agents.sh gives every agent --node-cgroup serverlessos/<node>), the
way a system daemon or a noisy neighbour outside the platform loads a real node.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import apply, get_json, kubectl, local_only, process_manifest, wait_for, wait_phase

pytestmark = [local_only, pytest.mark.timeout(420)]
HOT, OTHERS = "kwok-node-0", ("kwok-node-1", "kwok-node-2")
HOLD = "e2e-hold=1:NoSchedule"
CGROUP = Path("/sys/fs/cgroup")
# About 0.4 of a core: busy 40 ms, idle 60 ms.
BUSY = """
import time
while True:
    end = time.time() + 0.04
    while time.time() < end:
        pass
    time.sleep(0.06)
"""


def hog_groups(node: str) -> list[Path]:
    """The hog's cgroup in each hierarchy (v1) or the one (v2), under the node's
    `_system` group: the agent's, never a process's (see cgroup/driver.py SYSTEM)."""
    group = Path("serverlessos", node, "_system", "e2e-hog")
    if (CGROUP / "cgroup.controllers").exists():
        return [CGROUP / group]
    return [CGROUP / c / group for c in ("cpu", "cpuacct", "memory")]


@pytest.fixture
def hot_node() -> Iterator[subprocess.Popen[bytes]]:
    """One spinning core in the hot node's subtree, for as long as the test runs."""
    hog = subprocess.Popen(["python3", "-c", "while True: pass"])
    groups = hog_groups(HOT)
    try:
        for group in groups:
            group.mkdir(parents=True, exist_ok=True)
            (group / "cgroup.procs").write_text(str(hog.pid))
        yield hog
    finally:
        hog.kill()
        hog.wait()
        for group in groups:
            wait_for(lambda g=group: not (g / "cgroup.procs").read_text().strip(), timeout=10)
            group.rmdir()


def migrations(namespace: str) -> list[dict[str, Any]]:
    items = get_json("pmig", "-n", namespace)["items"]
    return sorted(items, key=lambda m: m["metadata"]["creationTimestamp"])


def test_a_hot_node_sheds_auto_processes_once_and_nothing_moves_back(
    namespace: str, hot_node: subprocess.Popen[bytes]
) -> None:
    # Gather the processes on the node about to be hot: the others refuse new work for now.
    for node in OTHERS:
        kubectl("taint", "nodes", node, HOLD, "--overwrite")
    try:
        auto = {"policy": "Auto"}
        apply(
            *(
                process_manifest(
                    name,
                    namespace,
                    command=["python3", "-c", BUSY],
                    resources={"cpu": "600m", "memory": "64Mi"},
                    migration=auto,
                )
                for name in ("busy-a", "busy-b")
            ),
            process_manifest(
                "pinned",
                namespace,
                command=["python3", "-c", "import time; time.sleep(3600)"],
                resources={"cpu": "100m", "memory": "64Mi"},
            ),  # policy Manual: never moved by the platform
        )
        for name in ("busy-a", "busy-b", "pinned"):
            assert wait_phase(name, namespace, "Running")["node"] == HOT
    finally:
        for node in OTHERS:
            kubectl("taint", "nodes", node, HOLD.split("=", maxsplit=1)[0] + "-", check=False)

    # Hot for three intervals (10 s each), then it sheds.
    first = wait_for(
        lambda: [m for m in migrations(namespace) if (m.get("status") or {}).get("phase")],
        timeout=150,
        every=1,
        message="the rebalancer migrated something off the hot node",
    )[0]
    assert first["metadata"]["labels"]["serverlessos.io/initiator"] == "rebalancer"
    assert first["spec"]["process"] in ("busy-a", "busy-b")
    assert first["metadata"]["annotations"]["serverlessos.io/reason"].startswith(f"{HOT} at ")
    wait_for(
        lambda: (
            (
                s := get_json("pmig", first["metadata"]["name"], "-n", namespace).get("status")
                or {}
            ).get("phase")
            in ("Succeeded", "Failed", "RolledBack")
            and s
        ),
        timeout=90,
        message="the first migration ended",
    )
    # Watch a while longer (several intervals, the hog still running): whatever else
    # moves, moves off the hot node, once per process, and nothing comes back.
    time.sleep(75)
    moved = migrations(namespace)
    summary = json.dumps(
        [
            (
                m["spec"]["process"],
                m.get("status", {}).get("sourceNode"),
                m["spec"]["targetNode"],
                m.get("status", {}).get("phase"),
            )
            for m in moved
        ]
    )
    assert all(m["status"]["phase"] == "Succeeded" for m in moved), summary
    processes = [m["spec"]["process"] for m in moved]
    assert len(processes) == len(set(processes)), f"a process moved twice: {summary}"
    assert "pinned" not in processes, summary
    assert all(m["status"]["sourceNode"] == HOT for m in moved), summary
    assert all(m["spec"]["targetNode"] in OTHERS for m in moved), summary
    for m in moved:
        status = get_json("sp", m["spec"]["process"], "-n", namespace)["status"]
        assert status["node"] == m["spec"]["targetNode"] and status["phase"] == "Running"
    assert get_json("sp", "pinned", "-n", namespace)["status"]["node"] == HOT
    events = get_json("events", "-n", namespace, "--field-selector", "reason=Rebalancing")
    assert {e["involvedObject"]["name"] for e in events["items"]} == set(processes)
    assert all(HOT in e["message"] and "%" in e["message"] for e in events["items"])
