"""Confining a process between fork and exec: its capabilities, identity, no_new_privs
and seccomp filter (spec.securityContext). Run in the child of the process's shim, which
is still root with every capability, in this order:

1. the capability bounding set cut to what the spec adds (nothing by default), so no
   exec, of a setuid binary or a file with capabilities, can gain more;
2. the seccomp filter (RuntimeDefault), while CAP_SYS_ADMIN still allows installing it;
3. supplementary groups, then gid, then uid (all three ids of each);
4. the permitted, effective and inheritable sets cut to the added capabilities, raised
   as ambient ones for a non-root uid so they survive its exec;
5. no_new_privs unless allowPrivilegeEscalation.

Standard library only: the fork server imports it (runtime/shim.py). A failure is a
ConfinementError whose message the shim reports; the process is never exec'd half
confined.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

from serverlessos.capabilities import NAMES
from serverlessos.capabilities import number as capability_number

from . import seccomp

PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 8, 24, 38, 47
PR_CAP_AMBIENT_RAISE = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = 126  # x86_64; aarch64: 91
_libc = ctypes.CDLL(None, use_errno=True)


class ConfinementError(Exception):
    pass


@dataclass(frozen=True)
class Confinement:
    """What the shim applies; the fork server receives it as a dict (to_wire)."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    capabilities: tuple[str, ...] = ()  # kept; every other one is dropped
    no_new_privs: bool = True
    seccomp: bool = True  # the RuntimeDefault filter

    def to_wire(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "capabilities": list(self.capabilities),
            "no_new_privs": self.no_new_privs,
            "seccomp": self.seccomp,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Confinement:
        return cls(
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            groups=tuple(int(g) for g in data["groups"]),
            capabilities=tuple(data["capabilities"]),
            no_new_privs=bool(data["no_new_privs"]),
            seccomp=bool(data["seccomp"]),
        )


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        raise ConfinementError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(NAMES) - 1


def _capset(mask: int) -> None:
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    low, high = mask & 0xFFFFFFFF, mask >> 32
    data = (ctypes.c_uint32 * 6)(low, low, low, high, high, high)  # eff, perm, inh per word
    if _libc.syscall(SYS_CAPSET, header, data) != 0:
        raise ConfinementError(f"capset: {os.strerror(ctypes.get_errno())}")


def apply(confinement: Confinement) -> None:
    keep = {capability_number(name) for name in confinement.capabilities}
    for cap in range(_last_capability() + 1):
        if cap not in keep:
            _prctl(PR_CAPBSET_DROP, cap, f"dropping CAP_{NAMES[cap]} from the bounding set")
    if confinement.seccomp:
        try:
            seccomp.install()
        except seccomp.SeccompError as exc:
            raise ConfinementError(str(exc)) from None
    try:
        os.setgroups(list(confinement.groups))
        os.setresgid(confinement.gid, confinement.gid, confinement.gid)
        if confinement.uid != 0 and keep:
            _prctl(PR_SET_KEEPCAPS, 1, "keeping capabilities across setuid")
        os.setresuid(confinement.uid, confinement.uid, confinement.uid)
    except OSError as exc:
        raise ConfinementError(
            f"cannot become uid {confinement.uid} gid {confinement.gid}: {exc.strerror}"
        ) from None
    _capset(sum(1 << cap for cap in keep))
    if confinement.uid != 0:
        for cap in sorted(keep):
            if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
                err = os.strerror(ctypes.get_errno())
                raise ConfinementError(f"raising CAP_{NAMES[cap]} as ambient: {err}")
    if confinement.no_new_privs:
        _prctl(PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
