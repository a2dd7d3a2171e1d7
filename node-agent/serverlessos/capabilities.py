"""Linux capabilities by their Kubernetes names (no CAP_ prefix), in kernel order:
NAMES[n] is capability n (linux/capability.h). The CRD's enum and the agent's
confinement both use it. Standard library only (the agent's fork server imports it)."""

from __future__ import annotations

NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def number(name: str) -> int:
    """NET_BIND_SERVICE or CAP_NET_BIND_SERVICE -> 10; ValueError if unknown."""
    bare = name.upper().removeprefix("CAP_")
    if bare not in NAMES:
        raise ValueError(f"unknown capability {name!r}")
    return NAMES.index(bare)
