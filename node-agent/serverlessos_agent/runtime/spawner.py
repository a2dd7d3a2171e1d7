"""Agent side of the fork server (see shim.py): start it, send requests, await results."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)
SPAWN_TIMEOUT = 30.0
# One request is one SOCK_SEQPACKET message: its buffers must hold the largest argv and
# environment validation admits (256 KiB) even JSON-escaped, and the default ~208 KiB
# does not (EMSGSIZE). The fork server reads with the same size (shim.py).
MESSAGE_BYTES = 4 << 20
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # root may exceed net.core.wmem_max / rmem_max


@dataclass(frozen=True)
class SpawnRequest:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: str
    run_dir: str
    procs: list[str]  # cgroup.procs files for the process
    shim_procs: list[str] = field(default_factory=list)  # ... and for its shim
    attempt: int = 0
    # Restore from a CRIU checkpoint instead of exec (live migration):
    # {"criu": binary, "images": dir, "lazy": post-copy}. argv/env/cwd are then unused.
    restore: dict[str, Any] | None = None
    # How the process is confined (confinement.Confinement.to_wire()); None: not at all.
    confinement: dict[str, Any] | None = None
    # Its tree (sandbox.Layout.to_wire()).
    sandbox: dict[str, Any] | None = None


@dataclass(frozen=True)
class SpawnResult:
    ok: bool
    shim_pid: int = 0
    shim_start: int = 0
    pid: int = 0
    pid_start: int = 0
    started_at: float = 0.0
    stage: str = ""
    error: str = ""


class Spawner:
    def __init__(self, can_restore: bool = False) -> None:
        self.can_restore = can_restore
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, asyncio.Future[SpawnResult]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def _start(self) -> socket.socket:
        if self._proc is not None:
            self._proc.poll()  # reap a fork server that died
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _size_buffers(ours)
        _size_buffers(theirs)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serverlessos_agent.runtime.shim",
                str(theirs.fileno()),
                *(["--restore"] if self.can_restore else []),
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.setblocking(False)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)
        self._sock = ours
        return ours

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            if not data:
                self._lost("the fork server exited")
                return
            message: dict[str, Any] = json.loads(data)
            future = self._pending.pop(message.pop("id"), None)
            if future is not None and not future.done():
                message.pop("attempt", None)
                future.set_result(SpawnResult(**message))

    def _lost(self, why: str) -> None:
        log.warning("%s; it is restarted on the next start", why)
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(FailedPrecondition(f"cannot start the process: {why}"))
        self._pending.clear()

    async def spawn(self, request: SpawnRequest) -> SpawnResult:
        async with self._lock:
            sock = self._sock or self._start()
        request_id = next(self._ids)
        future: asyncio.Future[SpawnResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        payload = json.dumps({"id": request_id, **request.__dict__}, ensure_ascii=False).encode()
        if len(payload) > MESSAGE_BYTES:
            self._pending.pop(request_id, None)
            raise InvalidArgument(
                f"the process's command, environment and paths take {len(payload)} bytes to "
                f"hand to the fork server, more than its {MESSAGE_BYTES}"
            )
        try:
            await asyncio.get_running_loop().sock_sendall(sock, payload)
        except OSError as exc:
            self._pending.pop(request_id, None)
            raise FailedPrecondition(f"cannot hand the process to the fork server: {exc}") from exc
        try:
            return await asyncio.wait_for(future, SPAWN_TIMEOUT)
        except TimeoutError as exc:
            self._pending.pop(request_id, None)
            raise FailedPrecondition(
                f"the fork server did not start the process within {SPAWN_TIMEOUT:.0f}s"
            ) from exc

    async def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            proc = self._proc
            await asyncio.to_thread(proc.wait, 5)


def _size_buffers(sock: socket.socket) -> None:
    """Room for MESSAGE_BYTES in one message: forced where the agent may (root), else
    as large as net.core.*mem_max allows (the size check in spawn() then says why)."""
    for forced, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, MESSAGE_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, MESSAGE_BYTES)
