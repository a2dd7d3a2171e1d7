"""cgroup drivers: one interface (driver.py), a v1 and a v2 implementation, auto-detected."""

from __future__ import annotations

from pathlib import Path

from ..errors import FailedPrecondition
from .driver import SHIMS, SYSTEM, CgroupDriver, CgroupStats, SubtreeUsage
from .v1 import CgroupV1
from .v2 import CgroupV2

__all__ = [
    "SHIMS",
    "SYSTEM",
    "CgroupDriver",
    "CgroupStats",
    "CgroupV1",
    "CgroupV2",
    "SubtreeUsage",
    "cgroup_mounts",
    "detect",
]


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> tuple[dict[str, Path], Path | None]:
    """(v1 controller -> mount point, the cgroup2 mount point or None)."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3:
                continue
            fstype, mount_point = rfields[0], Path(fields[4])
            if fstype == "cgroup2" and v2 is None:
                v2 = mount_point
            elif fstype == "cgroup":
                for option in rfields[2].split(","):
                    v1.setdefault(option, mount_point)
    return v1, v2


def detect(root: str, driver: str = "auto") -> CgroupDriver:
    """The driver for this machine: v1 where the v1 memory controller is mounted
    (hybrid hosts keep their controllers there), else v2."""
    v1_mounts, v2_mount = cgroup_mounts()
    if driver == "auto":
        driver = "v1" if "memory" in v1_mounts else "v2"
    if driver == "v1":
        return CgroupV1(root, v1_mounts)
    if driver == "v2":
        if v2_mount is None:
            raise FailedPrecondition("no cgroup2 filesystem is mounted on this machine")
        return CgroupV2(root, v2_mount)
    raise ValueError(f"unknown cgroup driver {driver!r}: use auto, v1 or v2")
