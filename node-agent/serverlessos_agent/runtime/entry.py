"""How a process enters its sandbox (sandbox.py) and is confined (confinement.py), run
by its shim, which is still host root, inside the process's cgroups:

    shim ── fork ──> helper (host root): private mount ns, builds the tree,
      │                unshare(user ns) ── "u" ──> shim writes its id maps ── "m" ──>
      │                root of the user ns: unshare(mount, pid) ── fork ──> PID 1:
      │                enters the tree, chdir, setsid, confined, exec
      └─ subreaper: when the helper exits, PID 1 is the shim's child, waited for as before

Why anything failed comes back over a pipe as "stage<TAB>message"; the pipe closes
at exec (close-on-exec), so EOF with nothing said means the process runs.

Standard library only: the fork server imports it (runtime/shim.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from typing import Any, NoReturn

from .confinement import Confinement
from .confinement import apply as apply_confinement
from .sandbox import (
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    Layout,
    enter_tree,
    host_id,
    mount_tree,
    prepare_skeleton,
    unshare,
    write_id_maps,
)

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


class EntryError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    return out


def _fail(why: int, stage: str, exc: BaseException) -> NoReturn:
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    try:
        os.write(why, f"{stage}\t{message}".encode()[:4096])
    finally:
        os._exit(127)


def open_stdio(log_path: str, confinement: Confinement) -> tuple[int, int]:
    """(/dev/null, the log): the log belongs to the process's host uid (CRIU reopens it
    as the restored process), with one mode on every node (CRIU compares it)."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    os.fchown(log, host_id(confinement.uid), host_id(confinement.gid))
    os.fchmod(log, 0o640)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    return null, log


def start(request: dict[str, Any]) -> tuple[int, float]:
    """Start the request's process in its sandbox: (host pid, started at)."""
    layout = Layout.from_wire(request["sandbox"])
    confinement = Confinement.from_wire(request["confinement"])
    try:
        prepare_skeleton(layout)
        null, log = open_stdio(request["log"], confinement)
    except OSError as exc:
        raise EntryError("sandbox", f"cannot prepare the process's tree: {exc}") from None
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise EntryError("sandbox", f"cannot become a subreaper: {os.strerror(ctypes.get_errno())}")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid_r, pid_w = os.pipe()
    why_r, why_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(ready_r)
        os.close(go_w)
        os.close(pid_r)
        os.close(why_r)
        _helper(request, layout, confinement, (null, log), (ready_w, go_r, pid_w, why_w))
    for fd in (ready_w, go_r, pid_w, why_w, null, log):
        os.close(fd)
    try:
        if os.read(ready_r, 1) == b"u":
            write_id_maps(helper)
            os.write(go_w, b"m")
        os.close(go_w)
        pid_text = _read_all(pid_r)
        os.waitpid(helper, 0)  # from here PID 1 is our child (we are its subreaper)
        why = _read_all(why_r).decode(errors="replace")  # EOF at its exec
    finally:
        for fd in (ready_r, pid_r, why_r):
            os.close(fd)
    if why or not pid_text:
        if pid_text:
            os.waitpid(int(pid_text), 0)
        stage, _, message = why.partition("\t")
        raise EntryError(stage or "sandbox", message or "the sandbox's helper died")
    return int(pid_text), time.time()


def _helper(
    request: dict[str, Any],
    layout: Layout,
    confinement: Confinement,
    stdio: tuple[int, int],
    pipes: tuple[int, int, int, int],
) -> NoReturn:
    """Host root: the tree, then the user namespace; forks PID 1 and exits. `pipes`:
    ready (we are in the user namespace), go (our ids are mapped), PID 1's pid, why."""
    ready, go, pid_out, why = pipes
    try:
        null, log = stdio
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        keep = {0, 1, 2, ready, go, pid_out, why}
        for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        mount_tree(layout)
        unshare(CLONE_NEWUSER, "user")
        os.write(ready, b"u")
        os.close(ready)
        if os.read(go, 1) != b"m":
            raise OSError(0, "the shim did not map the user namespace's ids")
        os.close(go)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        unshare(CLONE_NEWNS | CLONE_NEWPID, "mount and PID")
        pid = os.fork()
        if pid == 0:
            os.close(pid_out)
            _pid1(request, layout, confinement, why)
        os.write(pid_out, str(pid).encode())
        os._exit(0)
    except BaseException as exc:
        _fail(why, "sandbox", exc)


def _pid1(request: dict[str, Any], layout: Layout, confinement: Confinement, why: int) -> NoReturn:
    argv, cwd = request["argv"], request["cwd"]
    stage = "sandbox"
    try:
        enter_tree(layout)
        stage = "exec"
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise OSError(exc.errno, f"chdir {cwd!r}: {exc.strerror}") from None
        os.setsid()
        stage = "confine"
        apply_confinement(confinement)
        stage = "exec"
        try:
            os.execvpe(argv[0], argv, request["env"])
        except OSError as exc:
            raise OSError(exc.errno, f"exec {argv[0]!r}: {exc.strerror}") from None
    except BaseException as exc:
        _fail(why, stage, exc)
