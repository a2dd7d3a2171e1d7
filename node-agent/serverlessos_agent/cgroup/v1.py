"""cgroup v1: one hierarchy per controller (cpu, cpuacct, memory, and pids and
freezer where mounted); CPU via cpu.cfs_quota_us, memory via
memory.limit_in_bytes."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

from ..errors import FailedPrecondition
from ..records import Resources
from .driver import (
    CgroupDriver,
    CgroupStats,
    SubtreeUsage,
    kill_pids,
    make_dir,
    read_int,
    read_keyed,
    read_pids,
    remove_dir,
    write_file,
)

REQUIRED = ("cpu", "cpuacct", "memory")
OPTIONAL = ("pids", "freezer")
CFS_PERIOD_US = 100_000
UNLIMITED = "-1"
# memory.limit_in_bytes reads back as the page counter's maximum (about 2**63) when unlimited.
MEMORY_NO_LIMIT = 2**62


class CgroupV1(CgroupDriver):
    version = "v1"

    def __init__(self, root: str, mounts: dict[str, Path]) -> None:
        super().__init__(root)
        self.mounts = mounts
        self.missing = [c for c in REQUIRED if c not in mounts]
        self.controllers = [c for c in (*REQUIRED, *OPTIONAL) if c in mounts]
        # Co-mounted controllers (cpu,cpuacct) share one directory: visit it once.
        self.hierarchies = sorted({mounts[c] for c in self.controllers})

    def _dir(self, controller: str, group: str) -> Path:
        return self.mounts[controller] / group

    def check(self) -> None:
        if self.missing:
            raise FailedPrecondition(
                f"cgroup v1 controllers {', '.join(self.missing)} are not mounted"
            )
        for hierarchy in self.hierarchies:
            make_dir(hierarchy / self.root)

    def create(self, group: str) -> None:
        for hierarchy in self.hierarchies:
            make_dir(hierarchy / group)

    def set_limits(self, group: str, resources: Resources) -> None:
        cpu = self._dir("cpu", group)
        write_file(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        quota = resources.cpu_millis * CFS_PERIOD_US // 1000 if resources.cpu_millis else -1
        write_file(cpu / "cpu.cfs_quota_us", str(quota))
        memory = self._dir("memory", group)
        limit = str(resources.memory_bytes) if resources.memory_bytes else UNLIMITED
        try:
            write_file(memory / "memory.limit_in_bytes", limit)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise FailedPrecondition(
                    f"memory limit {resources.memory_bytes} bytes is below what the process "
                    "uses and the kernel could not reclaim enough"
                ) from exc
            raise

    def procs_files(self, group: str) -> list[Path]:
        return [h / group / "cgroup.procs" for h in self.hierarchies]

    def pids(self, group: str) -> list[int]:
        return read_pids(self._dir("memory", group) / "cgroup.procs")

    def kill(self, group: str) -> None:
        kill_pids(self.pids(group))
        if "freezer" in self.controllers:
            # v1: a frozen task acts on SIGKILL only once thawed.
            with contextlib.suppress(FailedPrecondition):
                self.freeze(group, False)

    def freeze(self, group: str, frozen: bool) -> bool:
        if "freezer" not in self.controllers:
            return False
        state = self._dir("freezer", group) / "freezer.state"
        if not state.exists():
            return False
        write_file(state, "FROZEN" if frozen else "THAWED")
        return True

    def remove(self, group: str) -> None:
        for hierarchy in self.hierarchies:
            if not remove_dir(hierarchy / group):
                raise FailedPrecondition(f"cgroup {hierarchy / group} still has processes")

    def stats(self, group: str) -> CgroupStats:
        memory = self._dir("memory", group)
        return CgroupStats(
            cpu_usage_ns=read_int(self._dir("cpuacct", group) / "cpuacct.usage"),
            cpu_throttled_ns=read_keyed(self._dir("cpu", group) / "cpu.stat").get(
                "throttled_time", 0
            ),
            memory_current=read_int(memory / "memory.usage_in_bytes"),
            memory_peak=read_int(memory / "memory.max_usage_in_bytes"),
            oom_kills=read_keyed(memory / "memory.oom_control").get("oom_kill", 0),
        )

    def subtree_usage(self, group: str) -> SubtreeUsage:
        cpu, memory = self._dir("cpu", group), self._dir("memory", group)
        quota = read_int(cpu / "cpu.cfs_quota_us")
        period = read_int(cpu / "cpu.cfs_period_us")
        limit = read_int(memory / "memory.limit_in_bytes")
        usage = read_int(memory / "memory.usage_in_bytes")
        inactive = read_keyed(memory / "memory.stat").get("total_inactive_file", 0)
        return SubtreeUsage(
            cpu_usage_ns=read_int(self._dir("cpuacct", group) / "cpuacct.usage"),
            memory_used=max(0, usage - inactive),
            cpu_limit_millis=quota * 1000 // period if quota > 0 else None,
            memory_limit=limit if limit < MEMORY_NO_LIMIT else None,
        )

    def display_path(self, group: str) -> str:
        return str(self._dir("memory", group))
