"""The cgroup v2 driver.

These machines are cgroup v1 (hybrid): their cgroup2 mount has no controllers,
because cpu and memory are bound to v1 hierarchies and cannot be moved. So:
- what v2 can do without controllers (groups, moving processes, cgroup.kill,
  CPU accounting in cpu.stat, and refusing limits it cannot enforce) is tested
  on the real cgroup2 mount, through the driver and through a real agent;
- the limit files (cpu.max, memory.max/high/swap.max, subtree_control) are
  tested against a directory tree that stands in for a v2 hierarchy with
  controllers. It is named a stand-in wherever it is used.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.cgroup import CgroupV2, cgroup_mounts
from serverlessos_agent.errors import FailedPrecondition
from serverlessos_agent.records import Ref, Resources

from .conftest import IS_ROOT, cleanup_cgroups

_, V2_MOUNT = cgroup_mounts()
real_v2 = pytest.mark.skipif(
    not IS_ROOT or V2_MOUNT is None, reason="needs root and a cgroup2 mount"
)


# ----- a stand-in v2 hierarchy (a plain directory tree) --------------------------


def standin_hierarchy(tmp_path: Path, controllers: str = "cpu memory pids") -> Path:
    """A directory shaped like a cgroup2 mount with controllers: NOT the kernel."""
    mount = tmp_path / "standin-cgroup2"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text(controllers + "\n")
    (mount / "cgroup.subtree_control").write_text("")
    return mount


def standin_group(mount: Path, group: str, controllers: str = "cpu memory pids") -> Path:
    """Create the files the kernel would create in a new v2 cgroup (stand-in)."""
    node = mount
    for part in Path(group).parts:
        node = node / part
        node.mkdir(exist_ok=True)
        (node / "cgroup.controllers").write_text(controllers + "\n")
        (node / "cgroup.subtree_control").write_text("")
        (node / "cgroup.procs").write_text("")
        (node / "cpu.max").write_text("max 100000\n")
        (node / "memory.max").write_text("max\n")
        (node / "memory.high").write_text("max\n")
        (node / "memory.swap.max").write_text("max\n")
    return node


def test_standin_limits_are_written_to_v2_files(tmp_path: Path) -> None:
    mount = standin_hierarchy(tmp_path)
    driver = CgroupV2("serverlessos", mount)
    group = driver.group(Ref("team", "app"))
    leaf = standin_group(mount, group)
    driver.create(group)
    # controllers enabled on every inner node down to the leaf, not on the leaf
    for node in (mount, mount / "serverlessos", mount / "serverlessos" / "team"):
        assert (node / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (leaf / "cgroup.subtree_control").read_text() == ""

    driver.set_limits(group, Resources(cpu_millis=250, memory_bytes=100 * 2**20))
    assert (leaf / "cpu.max").read_text() == "25000 100000"
    assert (leaf / "memory.max").read_text() == str(100 * 2**20)
    high = int((leaf / "memory.high").read_text())
    assert high == int(100 * 2**20 * 0.9) // 4096 * 4096
    assert (leaf / "memory.swap.max").read_text() == "0"

    driver.set_limits(group, Resources())
    assert (leaf / "cpu.max").read_text() == "max 100000"
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "memory.high").read_text() == "max"
    assert (leaf / "memory.swap.max").read_text() == "max"


def test_standin_missing_controller_is_a_clear_failed_precondition(tmp_path: Path) -> None:
    mount = standin_hierarchy(tmp_path, controllers="pids")
    driver = CgroupV2("serverlessos", mount)
    group = driver.group(Ref("default", "app"))
    standin_group(mount, group, controllers="pids")
    driver.create(group)
    with pytest.raises(FailedPrecondition, match="'memory' controller is not available"):
        driver.set_limits(group, Resources(memory_bytes=64 * 2**20))
    with pytest.raises(FailedPrecondition, match="'cpu' controller is not available"):
        driver.set_limits(group, Resources(cpu_millis=500))


def test_standin_stats_parse_v2_files(tmp_path: Path) -> None:
    mount = standin_hierarchy(tmp_path)
    driver = CgroupV2("r", mount)
    leaf = standin_group(mount, "r/ns/p")
    (leaf / "cpu.stat").write_text(
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
        "nr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n"
    )
    (leaf / "memory.current").write_text("1048576\n")
    (leaf / "memory.peak").write_text("2097152\n")
    (leaf / "memory.events").write_text(
        "low 0\nhigh 3\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"
    )
    stats = driver.stats("r/ns/p")
    assert stats.cpu_usage_ns == 1_500_000_000
    assert stats.cpu_throttled_ns == 250_000_000
    assert (stats.memory_current, stats.memory_peak, stats.oom_kills) == (2**20, 2**21, 1)


# ----- the real cgroup2 mount of this machine ------------------------------------


@real_v2
def test_real_v2_groups_accounting_kill_and_refusals() -> None:
    assert V2_MOUNT is not None
    root = f"sos-test-v2-{uuid.uuid4().hex[:8]}"
    driver = CgroupV2(root, V2_MOUNT)
    group = driver.group(Ref("default", "spin"))
    try:
        driver.check()
        driver.create(group)
        proc = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        for procs in driver.procs_files(group):
            procs.write_text(str(proc.pid))
        assert driver.pids(group) == [proc.pid]
        time.sleep(0.5)
        assert driver.stats(group).cpu_usage_ns > 100_000_000  # cpu.stat works without controllers
        if "memory" not in driver.available():
            with pytest.raises(FailedPrecondition, match="'memory' controller is not available"):
                driver.set_limits(group, Resources(memory_bytes=64 * 2**20))
        driver.kill(group)  # cgroup.kill
        assert proc.wait(timeout=5) == -9
        deadline = time.monotonic() + 5
        while driver.pids(group) and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.remove(group)
        assert not (V2_MOUNT / group).exists()
    finally:
        cleanup_cgroups(root)


@real_v2
def test_real_agent_on_the_v2_driver(agent_factory) -> None:
    agent = agent_factory(extra=["--cgroup-driver", "v2"])
    p = agent.run("v2proc", ["sh", "-c", "while :; do :; done"])
    assert p.state == pb.PROCESS_STATE_RUNNING
    assert p.cgroup == str(V2_MOUNT / agent.cgroup_root / "default" / "v2proc")
    assert f"0::/{agent.cgroup_root}/default/v2proc" in Path(f"/proc/{p.pid}/cgroup").read_text()
    time.sleep(1.2)
    stats = agent.stub.GetNodeStats(pb.GetNodeStatsRequest())
    assert stats.cgroup_version == "v2"
    (mine,) = [s for s in stats.processes if s.ref.name == "v2proc"]
    assert mine.cpu_seconds > 0.2
    if "memory" not in (V2_MOUNT / "cgroup.controllers").read_text().split():
        with pytest.raises(grpc.RpcError) as err:
            agent.run("limited", ["true"], memory=64 * 2**20)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'memory' controller is not available" in err.value.details()
    assert agent.stop("v2proc", grace=0).state == pb.PROCESS_STATE_STOPPED
