"""cgroup v2: one unified hierarchy; CPU via cpu.max, memory via memory.max
with memory.high at 90% of it (the kubelet's MemoryQoS throttling factor), so
a process is slowed and reclaimed before it is OOM-killed."""

from __future__ import annotations

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

CPU_PERIOD_US = 100_000
MEMORY_HIGH_FACTOR = 0.9
WANTED = ("cpu", "memory", "pids")
PAGE = 4096


class CgroupV2(CgroupDriver):
    version = "v2"

    def __init__(self, root: str, mount: Path) -> None:
        super().__init__(root)
        self.mount = mount

    def _dir(self, group: str) -> Path:
        return self.mount / group

    def available(self) -> set[str]:
        """Controllers the hierarchy offers."""
        try:
            return set((self.mount / "cgroup.controllers").read_text().split())
        except FileNotFoundError:
            return set()

    def check(self) -> None:
        make_dir(self._dir(self.root))

    def create(self, group: str) -> None:
        # Enable what is available on every inner node down to the leaf, so the
        # leaf gets its controllers; v2 forbids processes in inner nodes, which is
        # why shims have a leaf of their own.
        make_dir(self._dir(group))
        wanted = {c for c in WANTED if c in self.available()}
        if not wanted:
            return
        parts = Path(group).parts
        for depth in range(len(parts)):
            node = self.mount.joinpath(*parts[:depth])
            enabled = set((node / "cgroup.subtree_control").read_text().split())
            if not wanted <= enabled:
                write_file(
                    node / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted))
                )

    def _require(self, group: str, controller: str, what: str) -> Path:
        path = self._dir(group)
        enabled = set((path / "cgroup.controllers").read_text().split())
        if controller not in enabled:
            raise FailedPrecondition(
                f"cannot set a {what} limit: the cgroup v2 '{controller}' controller is not "
                f"available at {path} (cgroup.controllers: {' '.join(sorted(enabled)) or 'none'})"
            )
        return path

    def set_limits(self, group: str, resources: Resources) -> None:
        if resources.cpu_millis:
            path = self._require(group, "cpu", "CPU")
            quota = resources.cpu_millis * CPU_PERIOD_US // 1000
            write_file(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        elif (self._dir(group) / "cpu.max").exists():
            write_file(self._dir(group) / "cpu.max", f"max {CPU_PERIOD_US}")
        if resources.memory_bytes:
            path = self._require(group, "memory", "memory")
            high = int(resources.memory_bytes * MEMORY_HIGH_FACTOR) // PAGE * PAGE
            # Raise max before high and lower high before max, so high <= max throughout.
            current_max = (path / "memory.max").read_text().strip()
            if current_max == "max" or int(current_max) < resources.memory_bytes:
                write_file(path / "memory.max", str(resources.memory_bytes))
                write_file(path / "memory.high", str(high))
            else:
                write_file(path / "memory.high", str(high))
                write_file(path / "memory.max", str(resources.memory_bytes))
            if (path / "memory.swap.max").exists():
                write_file(path / "memory.swap.max", "0")
        elif (self._dir(group) / "memory.max").exists():
            path = self._dir(group)
            write_file(path / "memory.max", "max")
            write_file(path / "memory.high", "max")
            if (path / "memory.swap.max").exists():
                write_file(path / "memory.swap.max", "max")

    def procs_files(self, group: str) -> list[Path]:
        return [self._dir(group) / "cgroup.procs"]

    def pids(self, group: str) -> list[int]:
        return read_pids(self._dir(group) / "cgroup.procs")

    def kill(self, group: str) -> None:
        kill_file = self._dir(group) / "cgroup.kill"
        if kill_file.exists():
            try:
                write_file(kill_file, "1")
                return
            except FailedPrecondition:  # the group went away meanwhile: nothing to kill
                return
        kill_pids(self.pids(group))

    def freeze(self, group: str, frozen: bool) -> bool:
        path = self._dir(group) / "cgroup.freeze"
        if not path.exists():
            return False
        write_file(path, "1" if frozen else "0")
        return True

    def remove(self, group: str) -> None:
        if not remove_dir(self._dir(group)):
            raise FailedPrecondition(f"cgroup {self._dir(group)} still has processes")

    def stats(self, group: str) -> CgroupStats:
        path = self._dir(group)
        cpu = read_keyed(path / "cpu.stat")
        current = path / "memory.current"
        peak = path / "memory.peak"
        return CgroupStats(
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            cpu_throttled_ns=cpu.get("throttled_usec", 0) * 1000,
            memory_current=read_int(current) if current.exists() else None,
            memory_peak=read_int(peak) if peak.exists() else None,
            oom_kills=read_keyed(path / "memory.events").get("oom_kill", 0),
        )

    def subtree_usage(self, group: str) -> SubtreeUsage:
        path = self._dir(group)
        cpu = read_keyed(path / "cpu.stat")
        if not cpu:  # every cgroup v2 group has cpu.stat: the group is missing
            raise FileNotFoundError(f"no cgroup {path}")
        used = None
        if (path / "memory.current").exists():
            inactive = read_keyed(path / "memory.stat").get("inactive_file", 0)
            used = max(0, read_int(path / "memory.current") - inactive)
        cpu_limit = None
        if (path / "cpu.max").exists():
            quota, period = (path / "cpu.max").read_text().split()
            cpu_limit = int(quota) * 1000 // int(period) if quota != "max" else None
        memory_limit = None
        if (path / "memory.max").exists():
            value = (path / "memory.max").read_text().strip()
            memory_limit = int(value) if value != "max" else None
        return SubtreeUsage(
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            memory_used=used,
            cpu_limit_millis=cpu_limit,
            memory_limit=memory_limit,
        )

    def pressure_file(self, group: str, resource: str) -> Path | None:
        path = self._dir(group) / f"{resource}.pressure"
        return path if path.exists() else None

    def display_path(self, group: str) -> str:
        return str(self._dir(group))
