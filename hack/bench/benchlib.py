"""What every benchmark here prints, computes and cleans up the same way."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import sys
import time
from pathlib import Path

from serverlessos_agent.cgroup import cgroup_mounts

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """One line about the machine a figure was measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (
        f"machine: {model}, {os.cpu_count()} CPUs, {mem} GiB, kernel {platform.release()}, "
        f"Python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f}"
    )


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def kill_all(base: Path) -> None:
    for procs in base.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def thaw(base: Path) -> None:
    """Thaw every frozen cgroup under base: an interrupted checkpoint leaves its process
    frozen, and a frozen process does not die of SIGKILL until it is thawed."""
    for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        for control in base.rglob(name):
            with contextlib.suppress(OSError):
                control.write_text(thawed)


def remove_tree(base: Path) -> None:
    for directory in sorted(
        (p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
    ):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        base.rmdir()


def cleanup_cgroups(root: str, timeout: float = 20.0) -> None:
    """Kill whatever is left in a cgroup subtree (a bench's agent, its shims in
    <root>/_shims, its processes), then remove the subtree, as
    tests/integration/conftest.py does, but thawing what is frozen, and until the
    subtree is gone: a killed process with hundreds of MiB takes a moment to leave."""
    v1, v2 = cgroup_mounts()
    bases = [hierarchy / root for hierarchy in {*v1.values(), *([v2] if v2 else [])}]
    deadline = time.monotonic() + timeout
    while left := [base for base in bases if base.exists()]:
        if time.monotonic() > deadline:
            print(f"warning: could not remove {', '.join(map(str, left))}", file=sys.stderr)
            return
        for base in left:
            kill_all(base)
        for base in left:  # the freezer is one hierarchy (v1): thaw once all are killed
            thaw(base)
        for base in left:
            remove_tree(base)
        time.sleep(0.05)
