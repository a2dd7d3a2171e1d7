"""A process's own view of the machine: a user namespace, a mount namespace rooted in a
prepared tree, and a PID namespace, so that CRIU can still checkpoint it while it holds
no capability on the host (proved in ../shared/PLATFORM.md's far lead; the recipe:
runc's checkpoint of a container with a pivoted root and external mounts).

- **User namespace**: ids 0..65535 inside are host ids HOST_ID_BASE.. (one range for
  every process, as CRIU restores the map it dumped on whatever node). Inside, the
  process runs as its securityContext's uid; on the host it is an unprivileged uid
  that owns nothing but its working directory and its log file.
- **Mount namespace**: the tree under `root` (a directory of the process's on the
  host) holds read-only binds of /usr, /etc (and /bin, /lib... as on the host: links
  or binds) and of the node's extra read-only paths; /sys and the cgroup2 hierarchy
  read-only; its private working directory at /work; a fresh /proc, a private /tmp
  (tmpfs) and a /dev with null, zero, full, random and urandom only. The agent's
  state, other processes' directories and everything else are simply not there.
- **PID namespace**: it is PID 1; it sees its own processes only.

The tree is built by a helper child that is still host root (in a private mount
namespace), which then enters the new user namespace (its maps written by the shim),
unshares mount and PID namespaces and forks PID 1; that child stacks a fresh bind of
the tree (pivot_root refuses the copied, locked one), mounts /proc, /tmp and /dev,
pivots, and is confined (confinement.py) before exec.

For CRIU every bind from the host is an *external* mount, named by a key derived from
its place in the tree (`sos-usr` for /usr): the dump says "this mount is key K", the
restore says "key K is this host path" (its own node's). The process's stdio files
live outside its tree: they are external files too (keys of their mount and inode on
the source, carried to the target in stdio.json and checked there).

Standard library only: the fork server imports it (runtime/shim.py).
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

# In the private mount namespaces of a start and of a restore: a tmpfs where the tree
# and the mounts' sources are bound, reachable from a user namespace (stage()).
STAGE = "/tmp"
STAGED_ROOT = STAGE + "/root"
HOST_ID_BASE = 100000
ID_RANGE = 65536
DEVICES = ("null", "zero", "full", "random", "urandom")
# Top-level names that are links into /usr on merged-/usr systems (else binds).
LIBRARY_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
STDIO_KEY = re.compile(r"^file\[[0-9a-f]{1,16}:[0-9a-f]{1,16}\]$")

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    pass


def host_id(inner: int) -> int:
    return HOST_ID_BASE + inner


@dataclass(frozen=True)
class Bind:
    """A bind mount from the host into the tree: an external mount to CRIU."""

    target: str  # absolute, inside the tree
    source: str  # on the host
    writable: bool = False

    @property
    def key(self) -> str:
        return "sos" + self.target.replace("/", "-")


@dataclass(frozen=True)
class Layout:
    root: str  # the tree's directory on the host (a skeleton of mountpoints)
    workdir: str  # the process's private directory on the host, at /work
    ro_paths: tuple[str, ...] = ()  # the node's extra read-only paths, at the same place
    cgroup2: str = ""  # the host's cgroup2 mount, shown read-only at /sys/fs/cgroup
    tmp_bytes: int = 64 << 20  # the private /tmp's size (memory of the process's cgroup)
    links: dict[str, str] = field(default_factory=dict)  # /bin -> usr/bin, as on the host

    @classmethod
    def for_host(
        cls, root: str, workdir: str, ro_paths: tuple[str, ...], cgroup2: str, tmp_bytes: int
    ) -> Layout:
        links = {
            f"/{name}": os.readlink(f"/{name}")
            for name in LIBRARY_DIRS
            if os.path.islink(f"/{name}")
        }
        return cls(root, workdir, ro_paths, cgroup2, tmp_bytes, links)

    def binds(self) -> list[Bind]:
        """In mount order (parents first)."""
        out = [Bind("/usr", "/usr"), Bind("/etc", "/etc")]
        out += [
            Bind(f"/{name}", f"/{name}")
            for name in LIBRARY_DIRS
            if f"/{name}" not in self.links and os.path.isdir(f"/{name}")
        ]
        out += [Bind(path, path) for path in self.ro_paths]
        out.append(Bind("/sys", "/sys"))
        if self.cgroup2:
            out.append(Bind("/sys/fs/cgroup", self.cgroup2))
        out.append(Bind("/work", self.workdir, writable=True))
        out += [Bind(f"/dev/{name}", f"/dev/{name}", writable=True) for name in DEVICES]
        return out

    def to_wire(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "workdir": self.workdir,
            "ro_paths": list(self.ro_paths),
            "cgroup2": self.cgroup2,
            "tmp_bytes": self.tmp_bytes,
            "links": self.links,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Layout:
        return cls(
            root=data["root"],
            workdir=data["workdir"],
            ro_paths=tuple(data["ro_paths"]),
            cgroup2=data["cgroup2"],
            tmp_bytes=int(data["tmp_bytes"]),
            links=dict(data["links"]),
        )

    # ----- CRIU's view -----------------------------------------------------

    def dump_externals(self) -> list[str]:
        return [f"mnt[{b.target}]:{b.key}" for b in self.binds()]

    def restore_externals(self) -> list[str]:
        """Each source as stage_for_restore puts it, in CRIU's mount namespace."""
        return [f"mnt[{b.key}]:{STAGE}/{b.key}" for b in self.binds()]


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str:
    """Where the host's cgroup2 hierarchy is mounted ("" if nowhere)."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup2":
                found.append(fields[4])
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return preferred
    return found[0] if found else ""


def check_ro_path(path: str) -> str:
    """A node path processes may see: why not, or ""."""
    if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
        return f"{path!r} must be an absolute, normalized path other than /"
    if any(c in path for c in ":[],") or path.startswith(("/proc", "/sys", "/dev", "/work")):
        return f"{path!r} cannot be shown to processes (reserved, or CRIU cannot name it)"
    if not os.path.isdir(path):
        return f"{path!r} is not a directory on this node"
    return ""


def stdio_keys(pid: int) -> dict[int, str]:
    """The process's stdio files outside its tree, as CRIU names external files:
    file[<mount id>:<inode>] (hex), read from /proc."""
    with open(f"/proc/{pid}/mountinfo") as f:
        inside = {int(line.split()[0]) for line in f}
    keys = {}
    for fd in (0, 1, 2):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                mnt = next(int(line.split()[1]) for line in f if line.startswith("mnt_id:"))
            inode = os.stat(f"/proc/{pid}/fd/{fd}").st_ino
        except (OSError, StopIteration):
            continue
        if mnt not in inside:
            keys[fd] = f"file[{mnt:x}:{inode:x}]"
    return keys


def checked_stdio_keys(raw: object) -> dict[int, str]:
    """stdio.json from the source: at most fds 0-2, each a well-formed key."""
    if not isinstance(raw, dict) or len(raw) > 3:
        raise SandboxError("stdio.json must map at most three fds to keys")
    keys = {}
    for fd, key in raw.items():
        if str(fd) not in ("0", "1", "2") or not isinstance(key, str) or not STDIO_KEY.match(key):
            raise SandboxError(f"stdio.json: {fd!r}: {key!r} is not an fd 0-2 and a file key")
        keys[int(fd)] = key
    return keys


# ----- building it (host side) ----------------------------------------------


def prepare_skeleton(layout: Layout) -> None:
    """The tree's mountpoints and links, on the host (before a start or a restore)."""
    os.makedirs(layout.root, mode=0o755, exist_ok=True)
    for name in ("proc", "tmp", "dev", "work", "sys", "usr", "etc"):
        os.makedirs(os.path.join(layout.root, name), exist_ok=True)
    for bind in layout.binds():
        if not bind.target.startswith(("/dev/", "/sys/")):  # inside other mounts
            os.makedirs(layout.root + bind.target, exist_ok=True)
    for path, target in layout.links.items():
        link = layout.root + path
        if not os.path.islink(link):
            os.symlink(target, link)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    if (
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise SandboxError(f"mount {source or ''} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str, writable: bool, extra: int) -> None:
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | extra | (0 if writable else MS_RDONLY))


def unshare(flags: int, what: str) -> None:
    if _libc.unshare(flags) != 0:
        raise SandboxError(f"cannot create the {what} namespace: {os.strerror(ctypes.get_errno())}")


def private_mounts() -> None:
    """A private mount namespace whose mounts propagate nowhere."""
    unshare(CLONE_NEWNS, "mount")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def stage(paths: dict[str, str], recursive: bool = False) -> None:
    """In a private mount namespace: a tmpfs at STAGE holding a bind of each path (by
    name), so that a user namespace (a process's, or CRIU's as it restores one) reaches
    them whatever the modes of the directories above them (the agent's 0700 state
    lies above the tree). Opened first: STAGE may lie above the paths."""
    fds = {name: os.open(path, os.O_PATH | os.O_CLOEXEC) for name, path in paths.items()}
    try:
        _mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for name, fd in fds.items():
            target = f"{STAGE}/{name}"
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | (MS_REC if recursive else 0))
    finally:
        for fd in fds.values():
            os.close(fd)


def mount_tree(layout: Layout) -> None:
    """Host root, in a private mount namespace: the read-only tree with its binds,
    staged at STAGED_ROOT."""
    private_mounts()
    root = layout.root
    _bind(root, root, False, MS_NOSUID | MS_NODEV)
    for bind in layout.binds():
        if bind.target.startswith("/dev/"):
            continue  # /dev is made inside, on its tmpfs (enter_tree)
        flags = MS_NOSUID | MS_NODEV
        if bind.target.startswith("/sys"):
            flags |= MS_NOEXEC
        _bind(bind.source, root + bind.target, bind.writable, flags)
    stage({"root": root}, recursive=True)


def stage_for_restore(layout: Layout) -> None:
    """CRIU's process, before it restores: a private mount namespace with the tree's
    skeleton and every external mount's source staged (restore_externals names them
    there). Each is bound alone: /sys without its submounts, which the kernel would
    not clone into the restored (less privileged) mount namespace."""
    private_mounts()
    stage({"root": layout.root, **{b.key: b.source for b in layout.binds()}})


def write_id_maps(pid: int) -> None:
    """The user namespace of `pid`: 0..65535 inside are HOST_ID_BASE.. outside."""
    line = f"0 {HOST_ID_BASE} {ID_RANGE}\n".encode()
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def enter_tree(layout: Layout) -> None:
    """PID 1 of the new namespaces: its own /proc, /tmp and /dev, then pivot_root."""
    root = STAGED_ROOT
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(root, root, None, MS_BIND | MS_REC)  # the copied tree is locked: a fresh one
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount(
        "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={layout.tmp_bytes},mode=1777"
    )
    _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        os.close(os.open(f"{root}/dev/{name}", os.O_WRONLY | os.O_CREAT, 0o666))
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{root}/dev/{name}")
    _mount(None, root + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.chdir(root)
    if _libc.syscall(SYS_PIVOT_ROOT, b".", b".") != 0:
        raise SandboxError(f"pivot_root: {os.strerror(ctypes.get_errno())}")
    if _libc.umount2(b".", MNT_DETACH) != 0:
        raise SandboxError(f"detaching the old root: {os.strerror(ctypes.get_errno())}")
    os.chdir("/")
