"""Per-node accounting (--node-cgroup) for several agents on one machine, and network
throughput. Real cgroups, real load, a real network namespace; the parsers and the
published status are also checked directly."""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.cgroup import SYSTEM, CgroupV2, cgroup_mounts
from serverlessos_agent.observe import netdev
from serverlessos_agent.observe.node_status import NodeFacts, node_status
from serverlessos_agent.observe.stats import NodeSample, Pressure, parse_pressure

from .conftest import IS_ROOT, AgentProcess
from .test_cgroup_v2 import standin_group, standin_hierarchy

pytestmark = pytest.mark.timeout(120)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: real cgroups")

V1, V2_MOUNT = cgroup_mounts()
# What the local cluster's recipe does: a process outside the platform, in the node's
# subtree under the reserved _system group, in each hierarchy that accounts for it.
HOG_V1 = ("cpu", "cpuacct", "memory")
SPIN = "while True: pass"
# Memory is charged where it is first touched: allocate once moved (all three hierarchies).
SPIN_WITH_64MI = (
    "import time\n"
    "while open('/proc/self/cgroup').read().count('/_system/') < 3: time.sleep(0.01)\n"
    "x = b'x' * (64 * 2**20)\n"
    "while True: pass"
)


def _root() -> str:
    return f"sos-test-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _hogs(procs_files: list[Path], code: str, count: int = 1) -> Iterator[list[int]]:
    """Python spinners moved into a cgroup (by its cgroup.procs files)."""
    started = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        for proc in started:
            for procs in procs_files:
                procs.write_text(str(proc.pid))
        yield [p.pid for p in started]
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _v1_hog_group(root: str, name: str = "hog") -> list[Path]:
    procs = []
    for controller in HOG_V1:
        group = V1[controller] / root / SYSTEM / name
        group.mkdir(parents=True, exist_ok=True)
        procs.append(group / "cgroup.procs")
    return procs


def _stats(agent: AgentProcess) -> pb.NodeStats:
    return agent.stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=10)


def _wait_stats(
    agent: AgentProcess, pred: Callable[[pb.NodeStats], bool], timeout: float = 15.0
) -> pb.NodeStats:
    deadline = time.monotonic() + timeout
    while True:
        stats = _stats(agent)
        if pred(stats):
            return stats
        assert time.monotonic() < deadline, f"timed out; last sample:\n{stats}"
        time.sleep(0.2)


@needs_root
def test_a_hog_in_one_node_cgroup_loads_that_node_only(agent_factory) -> None:
    hot_root, cool_root = _root(), _root()
    # The cool node's cgroup is limited: its capacity comes from those limits.
    for controller, knob, value in (
        ("cpu", "cpu.cfs_quota_us", "50000"),
        ("memory", "memory.limit_in_bytes", str(2**30)),
    ):
        (V1[controller] / cool_root).mkdir(parents=True)
        (V1[controller] / cool_root / knob).write_text(value)
    hot = agent_factory(extra=["--node-cgroup", hot_root], cgroup_root=hot_root)
    cool = agent_factory(extra=["--node-cgroup", cool_root], cgroup_root=cool_root)
    hot.run("managed", ["sleep", "300"])
    procs = _v1_hog_group(hot_root)
    with _hogs(procs, SPIN_WITH_64MI) as [pid]:
        busy = _wait_stats(
            hot, lambda s: s.cpu_usage_cores > 0.6 and s.memory_used_bytes > 64 * 2**20
        )
        assert busy.node_cgroup == hot_root
        assert busy.cpu_capacity_millis == 1000 * (os.cpu_count() or 1)
        assert busy.memory_available_bytes == busy.memory_total_bytes - busy.memory_used_bytes
        idle = _stats(cool)
        assert idle.cpu_usage_cores < 0.2, idle
        assert idle.memory_used_bytes < 32 * 2**20, idle
        assert (idle.cpu_capacity_millis, idle.memory_total_bytes) == (500, 2**30)
        assert idle.memory_available_bytes == 2**30 - idle.memory_used_bytes

        # The agent leaves the foreign group alone: stopping its own process, and
        # restarting (re-adoption), touch nothing else under its root.
        hot.stop("managed")
        hot.kill9()
        hot.start()
        time.sleep(1.2)  # a couple of samples
        for path in procs:
            assert str(pid) in path.read_text().split(), f"hog moved out of {path}"
        assert _wait_stats(hot, lambda s: s.cpu_usage_cores > 0.6).cpu_usage_cores < 1.5
    _wait_stats(hot, lambda s: s.cpu_usage_cores < 0.3)


@pytest.mark.skipif(not IS_ROOT or V2_MOUNT is None, reason="needs root and a cgroup2 mount")
def test_v2_node_cgroup_usage_and_its_own_pressure(agent_factory) -> None:
    assert V2_MOUNT is not None
    root = _root()
    agent = agent_factory(extra=["--cgroup-driver", "v2", "--node-cgroup", root], cgroup_root=root)
    group = V2_MOUNT / root / SYSTEM / "hog"
    group.mkdir(parents=True)
    pressure = V2_MOUNT / root / "cpu.pressure"
    # Three spinners on this machine's two CPUs: they wait for CPU, so the node
    # cgroup's own PSI counts stalls.
    with _hogs([group / "cgroup.procs"], SPIN, count=3):
        stats = _wait_stats(
            # Over half a core: the spinners' use is counted (how much they get depends
            # on what else this shared machine runs).
            agent,
            lambda s: s.cpu_usage_cores > 0.5 and s.cpu_pressure.some_total_us > 0,
        )
        own_total = parse_pressure(pressure.read_text()).some_total_us
        machine_total = parse_pressure(Path("/proc/pressure/cpu").read_text()).some_total_us
    assert stats.cgroup_version == "v2"
    assert stats.cpu_pressure.some_total_us <= own_total < machine_total


@needs_root
def test_network_rate_and_capacity_in_the_agents_own_namespace(agent_factory) -> None:
    tag = uuid.uuid4().hex[:6]
    netns, veth = f"sostest-{tag}", f"stv{tag}"
    subnet = f"10.231.{int(tag[:2], 16)}"
    host_ip, agent_ip = f"{subnet}.1", f"{subnet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    sink = socket.socket()
    try:
        ip("netns", "add", netns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("addr", "add", f"{host_ip}/30", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", netns, "addr", "add", f"{agent_ip}/30", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        sink.bind((host_ip, 0))
        sink.listen()
        port = sink.getsockname()[1]

        def drain() -> None:
            with contextlib.suppress(OSError):
                conn, _ = sink.accept()
                while conn.recv(1 << 20):
                    pass

        threading.Thread(target=drain, daemon=True).start()
        agent = agent_factory(
            wrap=["nsenter", f"--net=/var/run/netns/{netns}"],
            extra=["--listen", f"{agent_ip}:0", "--metrics-listen", f"{agent_ip}:0"],
        )
        quiet = _stats(agent)
        assert quiet.network_capacity_bytes_per_second == 10_000 * 10**6 // 8  # a veth: 10 Gbit/s
        # A managed process shares the agent's network namespace: its traffic is the node's.
        sender = (
            f"import socket, time\ns = socket.create_connection(('{host_ip}', {port}))\n"
            "while True:\n    s.sendall(b'x' * 65536)\n    time.sleep(0.005)"
        )
        agent.run("sender", ["python3", "-c", sender])
        busy = _wait_stats(agent, lambda s: s.network_bytes_per_second > 2_000_000)
        assert busy.network_bytes_per_second < busy.network_capacity_bytes_per_second
    finally:
        sink.close()
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


# ----- pure -------------------------------------------------------------------------

# A real /proc/net/dev, plus a NIC with no padding and container plumbing.
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 4584575438 3433427    0    0    0     0          0         0 4584575438 3433427    0    0    0     0       0          0
  eth0: 2383147866   75345    0    0    0     0          0         0  4761789   44706    0    0    0     0       0          0
  ens5:1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0
vethab12: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0
  cni0: 777 1 0 0 0 0 0 0 777 1 0 0 0 0 0 0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
"""  # noqa: E501 (the kernel's own layout)


def test_net_dev_parsing_counts_nics_not_loopback_or_plumbing() -> None:
    assert netdev.parse_net_dev(NET_DEV) == {"eth0": 2383147866 + 4761789, "ens5": 1500}


def test_network_rate_between_readings() -> None:
    before = {"eth0": 1_000, "ens5": 5_000, "gone0": 100}
    after = {"eth0": 21_000, "ens5": 4_000, "new0": 10**9}  # ens5 was reset
    assert netdev.rate(before, after, 2.0) == 10_000.0
    assert netdev.rate(before, after, 0.0) == 0.0


def test_link_speed_of_loopback_is_unknown() -> None:
    assert netdev.link_speed_mbps("lo") is None
    assert netdev.link_speed_mbps("no-such-if0") is None
    assert netdev.capacity_bytes_per_second(["lo"]) == 0


def test_standin_v2_subtree_usage_and_pressure_file(tmp_path: Path) -> None:
    mount = standin_hierarchy(tmp_path)
    driver = CgroupV2("node", mount)
    node = standin_group(mount, "node")
    (node / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (node / "cpu.max").write_text("150000 100000\n")
    (node / "memory.max").write_text(f"{2**30}\n")
    (node / "memory.current").write_text(f"{300 * 2**20}\n")
    (node / "memory.stat").write_text(f"anon 1\ninactive_file {100 * 2**20}\nactive_file 5\n")
    usage = driver.subtree_usage("node")
    assert usage.cpu_usage_ns == 2_500_000_000
    assert (usage.cpu_limit_millis, usage.memory_limit) == (1500, 2**30)
    assert usage.memory_used == 200 * 2**20
    assert driver.pressure_file("node", "cpu") is None
    (node / "cpu.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")
    assert driver.pressure_file("node", "cpu") == node / "cpu.pressure"
    (node / "cpu.max").write_text("max 100000\n")
    (node / "memory.max").write_text("max\n")
    unlimited = driver.subtree_usage("node")
    assert (unlimited.cpu_limit_millis, unlimited.memory_limit) == (None, None)
    with pytest.raises(FileNotFoundError):
        driver.subtree_usage("node/missing")


def test_node_status_publishes_usage_network_and_when_it_was_sampled() -> None:
    sampled = datetime.datetime(2026, 5, 4, 3, 2, 1, tzinfo=datetime.UTC).timestamp()
    sample = NodeSample(
        sampled,
        2000,
        1.5,
        8 * 2**30,
        6 * 2**30,
        Pressure(some_avg10=3.5),
        Pressure(),
        Pressure(),
        memory_used=2 * 2**30,
        network_bytes_per_second=1234.6,
        network_capacity_bytes_per_second=125_000_000,
    )
    pressure = node_status(NodeFacts("n1", "10.0.0.1:7420", "v1", True), sample, 0, True)[
        "pressure"
    ]
    assert pressure == {
        "cpuSomeAvg10": 3.5,
        "memorySomeAvg10": 0.0,
        "ioSomeAvg10": 0.0,
        "cpuFree": "500m",
        "memoryFree": "6144Mi",
        "cpuUsed": "1500m",
        "memoryUsed": "2048Mi",
        "networkBytesPerSecond": 1235,
        "networkCapacityBytesPerSecond": 125_000_000,
        "sampledAt": "2026-05-04T03:02:01Z",
    }
