"""The cgroup driver interface and the file helpers both implementations use.

A process lives in `<root>/<namespace>/<name>` in every hierarchy the driver
manages; shims (the small supervisors that wait for each process) live in
`<root>/_shims`, outside both the processes' limits and the agent's own cgroup,
so restarting the agent (or its systemd unit or pod) does not take them down.
`_shims` cannot collide with a namespace: namespaces are DNS labels.

The agent creates, changes and removes only those groups; it never lists its
root to clean up. Other groups under the root are left alone, so a group whose
name starts with `_` (not a DNS label) is safe for processes outside the
platform; `_system` is the conventional one (SYSTEM). With --node-cgroup they
count as the node's load like everything else in that subtree.
"""

from __future__ import annotations

import contextlib
import errno
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..errors import FailedPrecondition
from ..records import Ref, Resources

SHIMS = "_shims"
SYSTEM = "_system"  # reserved for processes outside the platform; never touched


@dataclass(frozen=True)
class CgroupStats:
    cpu_usage_ns: int
    cpu_throttled_ns: int
    memory_current: int | None  # None where the memory controller is absent
    memory_peak: int | None
    oom_kills: int


@dataclass(frozen=True)
class SubtreeUsage:
    """What a whole subtree uses and may use: a node's cgroup (--node-cgroup)."""

    cpu_usage_ns: int  # cumulative, every descendant included
    # Working set: usage minus inactive page cache (reclaimable at no cost), as the
    # kubelet counts it. None where the memory controller is absent.
    memory_used: int | None
    cpu_limit_millis: int | None  # None: no quota
    memory_limit: int | None  # None: no limit


class CgroupDriver(ABC):
    version: str

    def __init__(self, root: str) -> None:
        self.root = root.strip("/")

    def group(self, ref: Ref) -> str:
        return f"{self.root}/{ref.namespace}/{ref.name}"

    @property
    def shim_group(self) -> str:
        return f"{self.root}/{SHIMS}"

    @abstractmethod
    def check(self) -> None:
        """Raise FailedPrecondition saying what is missing to manage cgroups here."""

    @abstractmethod
    def create(self, group: str) -> None: ...

    @abstractmethod
    def set_limits(self, group: str, resources: Resources) -> None: ...

    @abstractmethod
    def procs_files(self, group: str) -> list[Path]:
        """Files to write a PID into to move that process into the group."""

    @abstractmethod
    def pids(self, group: str) -> list[int]: ...

    @abstractmethod
    def kill(self, group: str) -> None:
        """SIGKILL every process in the group (frozen ones too)."""

    @abstractmethod
    def freeze(self, group: str, frozen: bool) -> bool:
        """Freeze (or thaw) every process in the group; False if this node has no
        freezer. A frozen process stays frozen whatever signal or ptrace detach it gets."""

    @abstractmethod
    def remove(self, group: str) -> None:
        """Remove the (empty) group; missing groups are fine."""

    @abstractmethod
    def stats(self, group: str) -> CgroupStats: ...

    @abstractmethod
    def subtree_usage(self, group: str) -> SubtreeUsage:
        """Raises OSError (FileNotFoundError) if the group does not exist."""

    def pressure_file(self, group: str, resource: str) -> Path | None:
        """The group's own PSI file (resource: cpu, memory, io), where the hierarchy
        keeps one; None means only the machine-wide /proc/pressure is there."""
        return None

    @abstractmethod
    def display_path(self, group: str) -> str: ...


def write_file(path: Path, value: str) -> None:
    """Write a cgroup control file, turning errors into messages a person can act on."""
    try:
        # O_TRUNC as a shell's ">" does; kernfs ignores it, a stand-in tree needs it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except PermissionError as exc:
        raise FailedPrecondition(
            f"cannot write {path}: permission denied; the agent must run as root "
            "(or be given a delegated cgroup subtree)"
        ) from exc
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"cannot write {path}: no such file (is the controller enabled here?)"
        ) from exc


def read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def read_keyed(path: Path) -> dict[str, int]:
    """Files of 'key value' lines (cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise FailedPrecondition(
            f"cannot create cgroup {path}: permission denied; the agent must run as root "
            "(or be given a delegated cgroup subtree)"
        ) from exc
    except OSError as exc:
        raise FailedPrecondition(f"cannot create cgroup {path}: {exc.strerror}") from exc


def remove_dir(path: Path) -> bool:
    """rmdir a cgroup; False while it still has processes."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def read_pids(procs: Path) -> list[int]:
    try:
        return [int(line) for line in procs.read_text().split()]
    except FileNotFoundError:
        return []


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
