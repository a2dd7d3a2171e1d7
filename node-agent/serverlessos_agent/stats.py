"""Node and per-process measurements: /proc/stat, /proc/meminfo, PSI, cgroup counters."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cgroup import CgroupDriver
from .model import Ref

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


def read_pressure(resource: str, proc: Path = PROC) -> Pressure:
    try:
        return parse_pressure((proc / "pressure" / resource).read_text())
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


class StatsSampler:
    """Takes samples and turns counters into rates between consecutive samples."""

    def __init__(self, driver: CgroupDriver, proc: Path = PROC) -> None:
        self.driver = driver
        self.proc = proc
        self.cpus = os.cpu_count() or 1
        self._cpu_prev = cpu_times(proc)
        self._group_prev: dict[Ref, tuple[float, int]] = {}
        self._peaks: dict[Ref, int] = {}
        self.memory_total = parse_meminfo((proc / "meminfo").read_text()).get("MemTotal", 0)

    def sample(self, groups: dict[Ref, str]) -> NodeSample:
        now = time.monotonic()
        busy, total = cpu_times(self.proc)
        prev_busy, prev_total = self._cpu_prev
        self._cpu_prev = (busy, total)
        node_cores = (
            (busy - prev_busy) / (total - prev_total) * self.cpus if total > prev_total else 0.0
        )
        meminfo = parse_meminfo((self.proc / "meminfo").read_text())
        processes = {}
        for ref, group in groups.items():
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                processes[ref] = self._sample_group(ref, group, now)
        for gone in set(self._group_prev) - set(groups):
            self._group_prev.pop(gone, None)
            self._peaks.pop(gone, None)
        return NodeSample(
            time=time.time(),
            cpu_capacity_millis=self.cpus * 1000,
            cpu_usage_cores=node_cores,
            memory_total=meminfo.get("MemTotal", 0),
            memory_available=meminfo.get("MemAvailable", 0),
            cpu_pressure=read_pressure("cpu", self.proc),
            memory_pressure=read_pressure("memory", self.proc),
            io_pressure=read_pressure("io", self.proc),
            processes=processes,
        )

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
