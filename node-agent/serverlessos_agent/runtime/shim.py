"""The code that runs outside the agent: the fork server and the per-process shims.

The agent starts one fork server (`python -m serverlessos_agent.runtime.shim FD`), a
small single-threaded process, and asks it over a SOCK_SEQPACKET socket to
start processes. For each, it forks a *shim*: a session leader that

1. detaches from the agent (its own session),
2. joins the process's cgroups, unshares a new PID namespace and starts the
   process in it as PID 1 (so it is limited from birth), then leaves for `_shims`,
3. reports the PIDs (and start times) to the agent and writes them to
   `run/shim.json`,
4. waits for it, and writes how it ended to `run/exit.json`.

A shim can also *restore* a process from a CRIU checkpoint (live migration)
instead of starting it; see `_restore`.

Shims do not depend on the agent: a killed or restarted agent re-adopts them
from `run/shim.json` and learns of exits from `run/exit.json`. Forking from a
small pre-started server instead of the multi-threaded gRPC agent keeps
starts fast and fork-safe.

Only the standard library is imported here, to keep the fork server small
(CRIU's RPC module is imported only by fork servers of nodes that restore).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from . import entry, sandbox
from .confinement import Confinement
from .procfs import start_time


class SetupError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(obj).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _send(report: socket.socket, message: dict[str, Any]) -> None:
    # If the agent went away, run/shim.json tells its successor.
    with contextlib.suppress(OSError):
        report.send(json.dumps(message).encode())


def _ignore(signum: int, frame: object) -> None:
    """A handler, not SIG_IGN: handlers reset to the default across exec, SIG_IGN does not."""


def _join(procs_files: list[str]) -> None:
    for procs in procs_files:
        with open(procs, "w") as f:
            f.write("0")


def _start(request: dict[str, Any]) -> tuple[int, float]:
    """Start the process in its sandbox (entry.py) as PID 1 of its namespaces, born
    inside its cgroups: the shim joins them first, so nothing of it ever runs
    unlimited, then leaves for `_shims`. (pid, when it started)"""
    try:
        _join(request["procs"])
    except OSError as exc:
        raise SetupError("cgroup", f"cannot enter the process's cgroup: {exc}") from exc
    try:
        return entry.start(request)
    except entry.EntryError as exc:
        raise SetupError(exc.stage, str(exc)) from None
    finally:
        with contextlib.suppress(OSError):
            _join(request["shim_procs"])  # best effort: a shim elsewhere still works


def _restore(request: dict[str, Any]) -> tuple[int, float]:
    """Restore a checkpoint (live migration) as our child, inside the process's cgroups.

    CRIU runs as our child (`criu swrk`) and, with rst_sibling, makes the restored
    process its sibling: our child, so we wait for it like any other run. Its
    cgroups from the source node are ignored; it inherits ours (joined first), so
    it is limited from its first instruction here too. CRIU recreates its user,
    mount and PID namespaces; the tree's binds are this node's paths (sandbox.py),
    its stdio this node's /dev/null and log. (pid, when it resumed)
    """
    from serverlessos.criu import rpc_pb2 as rpc  # noqa: PLC0415 (see serve)

    from .criu import CriuError, Swrk, checked  # noqa: PLC0415

    restore = request["restore"]
    layout = sandbox.Layout.from_wire(request["sandbox"])
    confinement = Confinement.from_wire(request["confinement"])
    try:
        _join(request["procs"])
    except OSError as exc:
        raise SetupError("cgroup", f"cannot enter the process's cgroup: {exc}") from exc
    try:
        sandbox.prepare_skeleton(layout)
        null, log = entry.open_stdio(request["log"], confinement)
    except OSError as exc:
        raise SetupError("restore", f"cannot prepare the process's tree: {exc}") from None
    images = os.open(restore["images"], os.O_RDONLY | os.O_DIRECTORY)
    resumed = 0.0

    def on_notify(script: str, pid: int) -> None:
        nonlocal resumed
        if script == "post-resume":
            resumed = time.time()

    # One fd per file key (CRIU closes each inherited fd once it holds it): this node's
    # /dev/null for the source's stdin, its log for the source's stdout and stderr.
    inherited: dict[str, int] = {}
    for fd, key in sorted(restore.get("stdio", {}).items()):
        if key not in inherited:
            inherited[key] = os.dup(null if int(fd) == 0 else log)
    swrk = Swrk(
        restore["criu"],
        inherit=tuple(inherited.values()),
        preexec=lambda: sandbox.stage_for_restore(layout),
    )
    try:
        options = rpc.Options(
            images_dir_fd=images,
            log_file="restore.log",
            log_level=4,
            rst_sibling=True,
            manage_cgroups=True,
            manage_cgroups_mode=rpc.IGNORE,
            notify_scripts=True,
            tcp_close=True,
            lazy_pages=bool(restore.get("lazy")),
            root=sandbox.STAGED_ROOT,
            external=layout.restore_externals(),
            inherit_fd=[rpc.InheritFd(key=key, fd=fd) for key, fd in inherited.items()],
        )
        response = checked(
            swrk.call(rpc.Request(type=rpc.RESTORE, opts=options), on_notify),
            "restore",
            Path(restore["images"]) / "restore.log",
        )
    except (CriuError, OSError) as exc:
        raise SetupError("restore", str(exc)) from exc
    finally:
        swrk.close()
        os.close(images)
        for fd in (null, log, *inherited.values()):
            os.close(fd)
        with contextlib.suppress(OSError):
            _join(request["shim_procs"])
    return response.restore.pid, resumed or time.time()


def _wait(pid: int) -> int:
    """Like Popen.wait: the exit code, or -signal."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)


def run_shim(request: dict[str, Any], report: socket.socket) -> NoReturn:
    run_dir = Path(request["run_dir"])
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, _ignore)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the fork server ignores it
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        log = os.open(run_dir / "shim.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        if request.get("restore"):
            pid, started_at = _restore(request)
        else:
            pid, started_at = _start(request)
        me = os.getpid()
        info = {
            "id": request["id"],
            "ok": True,
            "attempt": request["attempt"],
            "shim_pid": me,
            "shim_start": start_time(me),
            "pid": pid,
            "pid_start": start_time(pid) or 0,
            "started_at": started_at,
        }
        _write_json(run_dir / "shim.json", info)
        _send(report, info)
        report.close()
        code = _wait(pid)
        _write_json(
            run_dir / "exit.json",
            {
                "attempt": request["attempt"],
                "finished_at": time.time(),
                "signal": -code if code < 0 else 0,
                "exit_code": 128 - code if code < 0 else code,
            },
        )
    except SetupError as exc:
        _send(report, {"id": request["id"], "ok": False, "stage": exc.stage, "error": str(exc)})
    except BaseException as exc:
        _send(report, {"id": request["id"], "ok": False, "stage": "shim", "error": repr(exc)})
    os._exit(0)


def serve(fd: int, can_restore: bool = False) -> NoReturn:
    """The fork server's loop: one request in, one shim forked; exit when the agent goes."""
    if can_restore:
        # Restores happen during a migration's downtime: import CRIU's RPC (protobuf)
        # once here, not in every restoring shim.
        from . import criu  # noqa: F401, PLC0415
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # shims are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is for the agent, which closes us
    while True:
        try:
            data = sock.recv(4 << 20)  # spawner.MESSAGE_BYTES (stdlib only here)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)
        request = json.loads(data)
        if os.fork() == 0:
            run_shim(request, sock)


if __name__ == "__main__":
    serve(int(sys.argv[1]), can_restore="--restore" in sys.argv[2:])
