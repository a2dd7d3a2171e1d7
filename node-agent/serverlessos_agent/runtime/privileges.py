"""What the agent may do on this machine, checked once at start."""

from __future__ import annotations

CAP_SYS_ADMIN = 21


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges() -> list[str]:
    """Human-readable reasons the agent cannot start processes, empty if it can."""
    problems = []
    if not effective_capabilities() & (1 << CAP_SYS_ADMIN):
        problems.append(
            "the agent lacks CAP_SYS_ADMIN, which creating a PID namespace per process needs; "
            "run it as root"
        )
    return problems
