"""Node and per-process measurements: /proc/stat, /proc/meminfo, PSI, cgroup counters,
network throughput.

The node is the whole machine, or with a node cgroup (--node-cgroup) that
cgroup's subtree: several agents on one machine (the local cluster), each
standing for a node, then each see their own load. PSI follows the node cgroup
only where the hierarchy keeps per-cgroup pressure (cgroup v2).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..cgroup import CgroupDriver, SubtreeUsage
from ..records import Ref
from ..runtime.validation import NodeCapacity
from . import netdev

PROC = Path("/proc")


@dataclass(frozen=True)
class Pressure:
    """One /proc/pressure file; averages are percent of wall time, as the kernel reports."""

    some_avg10: float = 0.0
    some_avg60: float = 0.0
    full_avg10: float = 0.0
    full_avg60: float = 0.0
    some_total_us: int = 0
    full_total_us: int = 0


def parse_pressure(text: str) -> Pressure:
    values: dict[str, float] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition("=")
            values[f"{kind}_{key}"] = float(value)
    return Pressure(
        some_avg10=values.get("some_avg10", 0.0),
        some_avg60=values.get("some_avg60", 0.0),
        full_avg10=values.get("full_avg10", 0.0),
        full_avg60=values.get("full_avg60", 0.0),
        some_total_us=int(values.get("some_total", 0)),
        full_total_us=int(values.get("full_total", 0)),
    )


def read_pressure(resource: str, proc: Path = PROC, path: Path | None = None) -> Pressure:
    """A PSI file: `path` if given (a cgroup's own), else the machine's."""
    try:
        return parse_pressure((path or proc / "pressure" / resource).read_text())
    except (FileNotFoundError, OSError):
        return Pressure()  # kernels without PSI (CONFIG_PSI=n or psi=0)


def parse_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def cpu_times(proc: Path = PROC) -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open(proc / "stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float
    cpu_throttled_seconds: float
    memory_current: int
    memory_peak: int
    cpu_usage_cores: float


@dataclass(frozen=True)
class NodeSample:
    time: float
    cpu_capacity_millis: int
    cpu_usage_cores: float
    memory_total: int
    memory_available: int
    cpu_pressure: Pressure
    memory_pressure: Pressure
    io_pressure: Pressure
    processes: dict[Ref, ProcessSample] = field(default_factory=dict)
    memory_used: int = 0
    network_bytes_per_second: float = 0.0  # received + sent, over the sampling interval
    network_capacity_bytes_per_second: int = 0  # sum of link speeds; 0 = unknown


class StatsSampler:
    """Takes samples and turns counters into rates between consecutive samples."""

    def __init__(
        self,
        driver: CgroupDriver,
        proc: Path = PROC,
        node_cgroup: str = "",
        net_dev: Path = netdev.PROC_NET_DEV,
    ) -> None:
        self.driver = driver
        self.proc = proc
        self.node_cgroup = node_cgroup.strip("/")
        self.net_dev = net_dev
        self.machine_cpus = os.cpu_count() or 1
        self.machine_memory = parse_meminfo((proc / "meminfo").read_text()).get("MemTotal", 0)
        now = time.monotonic()
        self._cpu_prev = cpu_times(proc)
        # Raises if the node cgroup cannot be read: better at start than every sample.
        usage = self.driver.subtree_usage(self.node_cgroup) if self.node_cgroup else None
        self._node_prev = (now, usage.cpu_usage_ns if usage else 0)
        self._net_prev = (now, netdev.read_counters(net_dev))
        self._group_prev: dict[Ref, tuple[float, int]] = {}
        self._peaks: dict[Ref, int] = {}
        self.cpu_capacity_millis, self.memory_total = self._capacity(usage)

    def _capacity(self, usage: SubtreeUsage | None) -> tuple[int, int]:
        """(millicores, bytes): the machine's, or less where the node cgroup is limited."""
        cpu, memory = self.machine_cpus * 1000, self.machine_memory
        if usage is not None:
            cpu = min(cpu, usage.cpu_limit_millis or cpu)
            memory = min(memory, usage.memory_limit or memory)
        return cpu, memory

    def sample(self, groups: dict[Ref, str]) -> NodeSample:
        now = time.monotonic()
        if self.node_cgroup:
            usage = self.driver.subtree_usage(self.node_cgroup)
            prev_time, prev_ns = self._node_prev
            self._node_prev = (now, usage.cpu_usage_ns)
            elapsed = now - prev_time
            node_cores = (
                max(0.0, (usage.cpu_usage_ns - prev_ns) / 1e9 / elapsed) if elapsed > 0 else 0.0
            )
            self.cpu_capacity_millis, self.memory_total = self._capacity(usage)
            memory_used = min(self.memory_total, usage.memory_used or 0)
        else:
            busy, total = cpu_times(self.proc)
            prev_busy, prev_total = self._cpu_prev
            self._cpu_prev = (busy, total)
            node_cores = (
                (busy - prev_busy) / (total - prev_total) * self.machine_cpus
                if total > prev_total
                else 0.0
            )
            meminfo = parse_meminfo((self.proc / "meminfo").read_text())
            self.memory_total = meminfo.get("MemTotal", 0)
            memory_used = self.memory_total - meminfo.get("MemAvailable", 0)
        counters = netdev.read_counters(self.net_dev)
        net_time, net_before = self._net_prev
        self._net_prev = (now, counters)
        processes = {}
        for ref, group in groups.items():
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                processes[ref] = self._sample_group(ref, group, now)
        for gone in set(self._group_prev) - set(groups):
            self._group_prev.pop(gone, None)
            self._peaks.pop(gone, None)
        return NodeSample(
            time=time.time(),
            cpu_capacity_millis=self.cpu_capacity_millis,
            cpu_usage_cores=node_cores,
            memory_total=self.memory_total,
            memory_available=max(0, self.memory_total - memory_used),
            cpu_pressure=self._pressure("cpu"),
            memory_pressure=self._pressure("memory"),
            io_pressure=self._pressure("io"),
            processes=processes,
            memory_used=memory_used,
            network_bytes_per_second=netdev.rate(net_before, counters, now - net_time),
            network_capacity_bytes_per_second=netdev.capacity_bytes_per_second(sorted(counters)),
        )

    def _pressure(self, resource: str) -> Pressure:
        own = self.driver.pressure_file(self.node_cgroup, resource) if self.node_cgroup else None
        return read_pressure(resource, self.proc, own)

    def _sample_group(self, ref: Ref, group: str, now: float) -> ProcessSample:
        stats = self.driver.stats(group)
        prev = self._group_prev.get(ref)
        self._group_prev[ref] = (now, stats.cpu_usage_ns)
        rate = 0.0
        if prev and now > prev[0]:
            rate = max(0.0, (stats.cpu_usage_ns - prev[1]) / 1e9 / (now - prev[0]))
        current = stats.memory_current or 0
        peak = stats.memory_peak
        if peak is None:  # kernels without memory.peak: the highest we have seen
            peak = max(self._peaks.get(ref, 0), current)
            self._peaks[ref] = peak
        return ProcessSample(
            cpu_seconds=stats.cpu_usage_ns / 1e9,
            cpu_throttled_seconds=stats.cpu_throttled_ns / 1e9,
            memory_current=current,
            memory_peak=peak,
            cpu_usage_cores=rate,
        )


class NodeFigures:
    """The latest node sample, which GetNodeStats, /metrics and the ServerlessNode
    status all read, and the capacity that limits are checked against. The daemon
    retakes it every --stats-interval; between samples every reader sees the same one."""

    def __init__(self, sampler: StatsSampler) -> None:
        self._sampler = sampler
        self._latest: NodeSample | None = None
        self._capacity = NodeCapacity(sampler.cpu_capacity_millis, sampler.memory_total)

    def refresh(self, groups: dict[Ref, str]) -> None:
        self._latest = self._sampler.sample(groups)
        # A node cgroup's limits may change while the agent runs.
        self._capacity = NodeCapacity(self._latest.cpu_capacity_millis, self._latest.memory_total)

    def latest(self) -> NodeSample:
        if self._latest is None:
            raise RuntimeError("no node sample taken yet")  # the daemon takes one first
        return self._latest

    def capacity(self) -> NodeCapacity:
        return self._capacity
