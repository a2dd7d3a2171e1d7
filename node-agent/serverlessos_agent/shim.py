"""The code that runs outside the agent: the fork server and the per-process shims.

The agent starts one fork server (`python -m serverlessos_agent.shim FD`), a
small single-threaded process, and asks it over a SOCK_SEQPACKET socket to
start processes. For each, it forks a *shim*: a session leader that

1. moves itself out of the agent's cgroup (into `<root>/_shims`),
2. unshares a new PID namespace and forks the process into it as PID 1, holds
   it until it is in its cgroups, then lets it exec (so it never runs unlimited),
3. reports the PIDs (and start times) to the agent and writes them to
   `run/shim.json`,
4. waits for it, and writes how it ended to `run/exit.json`.

Shims do not depend on the agent: a killed or restarted agent re-adopts them
from `run/shim.json` and learns of exits from `run/exit.json`. Forking from a
small pre-started server instead of the multi-threaded gRPC agent keeps
starts fast and fork-safe.

Only the standard library is imported here, to keep the fork server small.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from .procfs import start_time

CLONE_NEWPID = 0x20000000
_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def _unshare_pid_namespace() -> None:
    if _libc.unshare(CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise SetupError(
            "namespace",
            f"cannot create a PID namespace: {os.strerror(err)}; it needs CAP_SYS_ADMIN "
            "(run the agent as root)",
        )


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


def _child(request: dict[str, Any], go_r: int, err_w: int) -> NoReturn:
    """Runs as PID 1 of the new namespace, between fork and exec."""
    stage = "start"
    try:
        if os.read(go_r, 1) != b"g":
            os._exit(126)  # the shim could not place us in our cgroups
        os.close(go_r)
        os.setsid()
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Nothing but stdio crosses exec; err_w is close-on-exec.
        os.closerange(3, err_w)
        os.closerange(err_w + 1, os.sysconf("SC_OPEN_MAX"))
        stage = f"chdir {request['cwd']!r}"
        os.chdir(request["cwd"])
        argv = request["argv"]
        stage = f"exec {argv[0]!r}"
        os.execvpe(argv[0], argv, request["env"])
    except OSError as exc:
        os.write(err_w, f"{stage}: {exc.strerror}".encode())
    except BaseException as exc:
        os.write(err_w, f"{stage}: {exc}".encode())
    os._exit(127)


def _join(procs_files: list[str]) -> None:
    for procs in procs_files:
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError:
            pass  # best effort: a shim in the agent's cgroup still works


def _decode(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "exit_code": 128 + os.WTERMSIG(status)}
    return {"signal": 0, "exit_code": os.waitstatus_to_exitcode(status)}


def run_shim(request: dict[str, Any], report: socket.socket) -> NoReturn:
    run_dir = Path(request["run_dir"])
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the fork server ignores it
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        log = os.open(run_dir / "shim.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        _join(request["shim_procs"])
        _unshare_pid_namespace()
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            report.close()
            os.close(go_w)
            os.close(err_r)
            _child(request, go_r, err_w)
        os.close(go_r)
        os.close(err_w)
        pid_start = start_time(pid) or 0
        try:
            for procs in request["procs"]:
                with open(procs, "w") as f:
                    f.write(str(pid))
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SetupError(
                "cgroup", f"cannot move the process into {procs}: {exc.strerror}"
            ) from exc
        started_at = time.time()
        os.write(go_w, b"g")
        os.close(go_w)
        chunks = []
        while chunk := os.read(err_r, 4096):
            chunks.append(chunk)
        os.close(err_r)
        if chunks:
            os.waitpid(pid, 0)
            raise SetupError("exec", b"".join(chunks).decode(errors="replace"))
        me = os.getpid()
        info = {
            "id": request["id"],
            "ok": True,
            "attempt": request["attempt"],
            "shim_pid": me,
            "shim_start": start_time(me),
            "pid": pid,
            "pid_start": pid_start,
            "started_at": started_at,
        }
        _write_json(run_dir / "shim.json", info)
        _send(report, info)
        report.close()
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        _write_json(
            run_dir / "exit.json",
            {"attempt": request["attempt"], "finished_at": time.time(), **_decode(status)},
        )
    except SetupError as exc:
        _send(report, {"id": request["id"], "ok": False, "stage": exc.stage, "error": str(exc)})
    except BaseException as exc:
        _send(report, {"id": request["id"], "ok": False, "stage": "shim", "error": repr(exc)})
    os._exit(0)


def serve(fd: int) -> NoReturn:
    """The fork server's loop: one request in, one shim forked; exit when the agent goes."""
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # shims are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is for the agent, which closes us
    while True:
        try:
            data = sock.recv(1 << 20)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)
        request = json.loads(data)
        if os.fork() == 0:
            run_shim(request, sock)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
