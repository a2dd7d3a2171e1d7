"""The default seccomp profile of confined processes (spec.securityContext.seccompProfile
RuntimeDefault), as a classic BPF program installed with prctl(2) before exec.

Like the container runtimes' default profiles it refuses (EPERM) what an unprivileged
tenant has no business doing and what has been the kernel's attack surface: mounting
and namespaces (mount, unshare, setns, pivot_root, the new mount API, namespace flags
of clone; clone3 answers ENOSYS so libc falls back to clone, whose flags a filter can
see), kernel modules and kexec, keyrings, bpf, perf events, userfaultfd, reading or
writing other processes' memory, clocks, swap, reboot, quotas and accounting. Every
other system call is allowed. x86_64 only (a filter is per architecture): elsewhere
the agent refuses RuntimeDefault with a clear error, and Unconfined still runs.

Standard library only: the fork server imports it (runtime/shim.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
# x86_64 system call numbers (asm/unistd_64.h; tests check them against the header).
REFUSED = {
    "acct": 163,
    "add_key": 248,
    "bpf": 321,
    "clock_adjtime": 305,
    "clock_settime": 227,
    "create_module": 174,
    "delete_module": 176,
    "finit_module": 313,
    "fsconfig": 431,
    "fsmount": 432,
    "fsopen": 430,
    "fspick": 433,
    "get_kernel_syms": 177,
    "init_module": 175,
    "ioperm": 173,
    "iopl": 172,
    "kcmp": 312,
    "kexec_file_load": 320,
    "kexec_load": 246,
    "keyctl": 250,
    "lookup_dcookie": 212,
    "mount": 165,
    "mount_setattr": 442,
    "move_mount": 429,
    "move_pages": 279,
    "name_to_handle_at": 303,
    "nfsservctl": 180,
    "open_by_handle_at": 304,
    "open_tree": 428,
    "perf_event_open": 298,
    "pivot_root": 155,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "query_module": 178,
    "quotactl": 179,
    "reboot": 169,
    "request_key": 249,
    "setns": 308,
    "settimeofday": 164,
    "swapoff": 168,
    "swapon": 167,
    "syslog": 103,
    "sysfs": 139,
    "_sysctl": 156,
    "umount2": 166,
    "unshare": 272,
    "uselib": 134,
    "userfaultfd": 323,
    "ustat": 136,
    "vhangup": 153,
}
CLONE, CLONE3 = 56, 435
# clone(2) flags that make namespaces (CLONE_NEWNS .. CLONE_NEWNET, CLONE_NEWCGROUP).
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
NAMESPACE_FLAGS |= 0x20000000 | 0x40000000 | 0x00000080  # NEWPID, NEWNET, NEWTIME

# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_KILL_PROCESS, RET_ALLOW, RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class SeccompError(Exception):
    pass


def supported() -> bool:
    return platform.machine() == "x86_64"


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""

    def refuse(err: int) -> tuple[int, int, int, int]:
        return (RET_K, 0, 0, RET_ERRNO | err)

    prog = [
        (LD_W_ABS, 0, 0, OFFSET_ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_KILL_PROCESS),  # another ABI (i386 via int 0x80): no
        (LD_W_ABS, 0, 0, OFFSET_NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        refuse(errno.EPERM),  # the x32 ABI
    ]
    for nr in sorted(REFUSED.values()):
        prog += [(JEQ_K, 0, 1, nr), refuse(errno.EPERM)]
    prog += [(JEQ_K, 0, 1, CLONE3), refuse(errno.ENOSYS)]
    prog += [
        (JEQ_K, 0, 3, CLONE),
        (LD_W_ABS, 0, 0, OFFSET_ARG0),  # the flags' low 32 bits hold every CLONE_NEW*
        (JSET_K, 0, 1, NAMESPACE_FLAGS),
        refuse(errno.EPERM),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    return prog


def install() -> None:
    """Install the filter on the calling thread (inherited across fork and exec). The
    caller holds CAP_SYS_ADMIN or has set no_new_privs."""
    if not supported():
        raise SeccompError(
            f"the RuntimeDefault seccomp profile is defined for x86_64, not {platform.machine()}"
        )
    instructions = program()
    buffer = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in instructions))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(instructions), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise SeccompError(f"cannot install the seccomp filter: {os.strerror(ctypes.get_errno())}")
