"""The source's side of a migration: freeze, dump with CRIU, send to the target.

CRIU leaves the process *stopped*, never killed (leave_stopped), so a rollback
only has to continue it. If anything fails before the target holds the
checkpoint, the source resumes the process itself before reporting the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.criu import rpc_pb2 as rpc
from serverlessos.files import atomic_write_json

from .. import convert
from ..errors import FailedPrecondition, InvalidArgument
from ..records import ProcessRecord, Ref
from ..runtime.criu import LAZY_READY_TIMEOUT, CriuError, CriuInfo, Swrk, checked, usable_binary
from ..runtime.freezing import Freezer
from ..runtime.process_table import ProcessTable
from ..runtime.sandbox import Layout, stdio_keys
from .directory import MigrationDirs
from .page_tunnel import Tunnel
from .permits import Permits
from .transfer import Source, chunks

# The channel to the target agent: keepalive pings notice a cut link within ~15 s
# even while a large chunk is stuck in flight.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", 8 << 20),
]
TRANSFER_TIMEOUT = 900.0

Progress = Callable[[pb.CheckpointProgress], Awaitable[None]]


@dataclass
class Outgoing:
    """Source side, while the migration is open."""

    migration_id: str
    ref: Ref
    swrk: Swrk | None = None
    dump: asyncio.Future[Any] | None = (
        None  # the CRIU dump call (post-copy: until pages are served)
    )
    tunnel: Tunnel | None = None  # post-copy with TLS: the memory's way to the target


@dataclass(frozen=True)
class PageServing:
    """Post-copy: where the target pulls the memory from, and how CRIU serves it."""

    address: str  # host:port for the target
    criu_options: list[str]  # CRIU options, config-file lines
    inherit: tuple[int, ...] = ()  # fds CRIU must hold (the tunnel's socket)


def _free_port(host: str) -> int:
    """A port for CRIU's page server (CRIU needs a number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _dir_size(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


class CheckpointSource:
    def __init__(
        self,
        node_name: str,
        *,
        freezer: Freezer,
        dirs: MigrationDirs,
        criu: CriuInfo | None,
        page_server_host: str,
        table: ProcessTable,
        permits: Permits,
        layouts: Callable[[ProcessRecord], Layout],
    ) -> None:
        self._node_name = node_name
        self._layouts = layouts  # each process's sandbox: its mounts are CRIU externals
        self._table = table
        self._permits = permits
        self._freezer = freezer
        self._dirs = dirs
        self._criu = criu
        self._page_server_host = page_server_host
        self._out: dict[str, Outgoing] = {}

    def outgoing(self, migration_id: str) -> Outgoing | None:
        """The migration's CRIU dump while it is open here, None once finished."""
        return self._out.get(migration_id)

    async def checkpoint(
        self,
        ref: Ref,
        migration_id: str,
        target: str,
        mode: int,
        progress: Progress,
        *,
        target_node: str = "",
        ticket: bytes = b"",
    ) -> None:
        """Freeze, dump, send. On failure the process runs on here before this raises.
        With TLS, only under the operator's ticket, to the node it names (permits.py)."""
        binary = usable_binary(self._criu, self._node_name)
        if not target:
            raise InvalidArgument("target_endpoint is required")
        if mode not in (pb.MIGRATION_MODE_STOP_AND_COPY, pb.MIGRATION_MODE_POST_COPY):
            raise InvalidArgument(f"unsupported migration mode {mode}")
        lazy = mode == pb.MIGRATION_MODE_POST_COPY
        self._dirs.path(migration_id)  # a bad id is refused before anything is frozen
        permit = self._permits.to_send(self._table.get(ref), migration_id, target_node, ticket)
        async with self._dirs.lock(migration_id):
            record = await self._freezer.freeze(ref, migration_id)
            assert record.run is not None
            directory = self._dirs.fresh(migration_id)
            images = directory / "images"
            images.mkdir()
            self._dirs.write_meta(
                migration_id,
                {"role": "source", "ref": [ref.namespace, ref.name], "created": time.time()},
            )
            out = Outgoing(migration_id, ref)
            self._out[migration_id] = out
            try:
                page_server = ""
                started = time.time()
                frozen_at = started
                if lazy:
                    serving = await self._page_server(out, target_node)
                    page_server = serving.address
                    frozen_at = await self._dump_lazy(out, binary, record, images, serving)
                else:
                    frozen_at = await self._dump(out, binary, record, images)
                dump_seconds = time.time() - started
                self._freezer.hold(record)
                await progress(
                    pb.CheckpointProgress(
                        stage=pb.CheckpointProgress.STAGE_DUMPED,
                        frozen_at=convert.timestamp(frozen_at),
                        dump_seconds=dump_seconds,
                    )
                )
                sent_at = time.time()
                sent = await self._send(
                    record,
                    migration_id,
                    target,
                    ticket=ticket if permit is not None else b"",
                    target_node=target_node,
                    mode=mode,
                    page_server=page_server,
                    frozen_at=frozen_at,
                )
                await progress(
                    pb.CheckpointProgress(
                        stage=pb.CheckpointProgress.STAGE_TRANSFERRED,
                        frozen_at=convert.timestamp(frozen_at),
                        transferred_bytes=sent,
                        dump_seconds=dump_seconds,
                        transfer_seconds=time.time() - sent_at,
                        page_server=page_server,
                        memory_bytes=_dir_size(images, "pages-*.img"),
                    )
                )
            except BaseException as exc:
                reason = str(exc) or type(exc).__name__
                await self.resume(migration_id, ref, f"checkpoint failed: {reason}")
                raise

    async def _dump(self, out: Outgoing, binary: str, record: ProcessRecord, images: Path) -> float:
        """Stop-and-copy: dump everything, leave the tree stopped. Returns when it froze."""
        frozen = [time.time()]
        out.swrk = Swrk(binary)
        loop = asyncio.get_running_loop()
        out.dump = loop.run_in_executor(
            None, _dump_call, out.swrk, record, self._layouts(record), images, None, None, frozen
        )
        try:
            await out.dump
        finally:
            out.swrk.close()
            out.swrk = None
        return frozen[0]

    async def _page_server(self, out: Outgoing, target_node: str) -> PageServing:
        """Where the target pulls the memory from, and how CRIU serves it: on a port of
        this node's address (no TLS), or over this agent's page tunnel, for the target
        alone (TLS: CRIU is given a socket and never listens)."""
        host = self._page_server_host
        tls = self._permits.tls
        if tls is None:
            port = _free_port(host)
            return PageServing(f"{host}:{port}", [f"address {host}", f"port {port}"])
        out.tunnel = Tunnel()
        address = await out.tunnel.serve(tls, host, identity.node(target_node))
        fd = out.tunnel.criu_end.fileno()
        return PageServing(address, [f"ps-socket {fd}"], inherit=(fd,))

    async def _dump_lazy(
        self,
        out: Outgoing,
        binary: str,
        record: ProcessRecord,
        images: Path,
        serving: PageServing,
    ) -> float:
        """Post-copy: dump all but memory; CRIU then serves the memory (`serving`) until
        the target has pulled it (the dump call ends then). Returns once the images
        are complete, which CRIU signals on its status fd."""
        frozen = [time.time()]
        # Over RPC a lazy dump takes only a port; a config file says where and how.
        config = images.parent / "page-server.conf"
        config.write_text("".join(line + "\n" for line in serving.criu_options))
        ready_r, ready_w = os.pipe()
        out.swrk = Swrk(binary, inherit=serving.inherit)
        if out.tunnel is not None:
            out.tunnel.release_criu_end()
        loop = asyncio.get_running_loop()
        out.dump = loop.run_in_executor(
            None,
            _dump_call,
            out.swrk,
            record,
            self._layouts(record),
            images,
            config,
            ready_w,
            frozen,
        )
        ready: asyncio.Future[bytes] = loop.run_in_executor(None, os.read, ready_r, 1)
        try:
            done, _ = await asyncio.wait(
                {out.dump, ready}, timeout=LAZY_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if out.dump in done:
                out.dump.result()  # raises CRIU's error
                raise CriuError("CRIU ended the lazy dump before its page server was ready")
            if ready not in done:
                raise CriuError(f"CRIU's page server was not ready in {LAZY_READY_TIMEOUT:.0f}s")
        finally:
            os.close(ready_w)  # unblocks the reader if CRIU never wrote
            with contextlib.suppress(Exception):
                await ready
            os.close(ready_r)
        return frozen[0]

    async def _send(
        self,
        record: ProcessRecord,
        migration_id: str,
        target: str,
        *,
        ticket: bytes,
        target_node: str,
        mode: int,
        page_server: str,
        frozen_at: float,
    ) -> int:
        directory = self._dirs.path(migration_id)
        header = pb.CheckpointHeader(
            migration_id=migration_id,
            source_node=self._node_name,
            mode=mode,  # type: ignore[arg-type]
            process=convert.process_to_pb(record),
            log_path=record.log_path,
            workdir=record.workdir,
            page_server=page_server,
            frozen_at=frozen_at,
            ticket=ticket,
        )
        sources = [
            Source("images", directory / "images"),
            Source("work", Path(record.workdir)),
            Source("logs", Path(record.log_path).parent),
        ]
        stats: dict[str, int] = {}

        async def stream() -> AsyncIterator[pb.CheckpointChunk]:
            yield pb.CheckpointChunk(header=header)
            produce = chunks(sources, stats)
            while True:
                chunk = await asyncio.to_thread(next, produce, None)
                if chunk is None:
                    return
                yield chunk

        async with self._channel(target, target_node) as channel:
            stub = pb_grpc.AgentStub(channel)
            try:
                reply = await stub.ReceiveCheckpoint(stream(), timeout=TRANSFER_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                raise FailedPrecondition(
                    f"sending the checkpoint to {target} failed: {exc.code().name}: {exc.details()}"
                ) from exc
        return int(reply.received_bytes)

    def _channel(self, target: str, target_node: str) -> grpc.aio.Channel:
        """To the target agent: with TLS as this node, by the target node's TLS name (it
        is that node's agent, or the handshake fails)."""
        tls = self._permits.tls
        if tls is None:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        name = identity.node(target_node).tls_name
        return grpc.aio.secure_channel(
            target,
            tls.channel_credentials(),
            options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", name)],
        )

    async def resume(self, migration_id: str, ref: Ref, why: str) -> bool:
        """Undo the source's side (a failed checkpoint, or a rollback): stop CRIU,
        continue the process. False if it was not frozen here for this migration."""
        out = self._out.get(migration_id)
        if out is not None:
            if out.swrk is not None:
                out.swrk.kill()  # a killed CRIU lets go of (and continues) the seized tree
            if out.dump is not None:
                with contextlib.suppress(BaseException):
                    await out.dump
            if out.swrk is not None:
                out.swrk.close()  # reaps it
                out.swrk = None
            if out.tunnel is not None:
                await out.tunnel.close()
        self._out.pop(migration_id, None)
        resumed = await self._freezer.resume(ref, migration_id, why)
        self._dirs.remove(migration_id)
        return resumed

    async def close(self, migration_id: str) -> None:
        """The migration is over here (committed): let go of CRIU and forget it."""
        out = self._out.pop(migration_id, None)
        if out is not None and out.swrk is not None:
            out.swrk.kill()
            out.swrk.close()
        if out is not None and out.tunnel is not None:
            await out.tunnel.close()


def _dump_call(  # noqa: PLR0917 (run_in_executor passes positionals)
    swrk: Swrk,
    record: ProcessRecord,
    layout: Layout,
    images: Path,
    lazy_config: Path | None,
    status_fd: int | None,
    frozen: list[float],
) -> None:
    """CRIU's dump, in a worker thread: it blocks until CRIU answers (post-copy: until
    the target has pulled all memory from the page server). The sandbox's binds are
    external mounts; its stdio, outside its tree, external files, whose keys go to the
    target in stdio.json (it binds its own /dev/null and log to them)."""
    assert record.run is not None
    stdio = stdio_keys(record.run.pid)
    atomic_write_json(images / "stdio.json", {str(fd): key for fd, key in stdio.items()})
    images_fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    try:
        options = rpc.Options(
            images_dir_fd=images_fd,
            pid=record.run.pid,
            log_file="dump.log",
            log_level=4,
            leave_stopped=True,  # a rollback continues it; a commit kills it
            manage_cgroups=True,
            manage_cgroups_mode=rpc.IGNORE,  # the target puts it in its own cgroup
            tcp_established=True,  # connections are closed on restore (tcp_close)
            network_lock=rpc.SKIP,
            file_locks=True,
            notify_scripts=True,
            external=[*layout.dump_externals(), *sorted(set(stdio.values()))],
        )
        if lazy_config is not None:
            options.lazy_pages = True
            options.config_file = str(lazy_config)
        if status_fd is not None:
            options.status_fd = status_fd

        def on_notify(script: str, pid: int) -> None:
            if script == "pre-dump":
                frozen[0] = time.time()  # CRIU seizes (freezes) the tree right after

        checked(
            swrk.call(rpc.Request(type=rpc.DUMP, opts=options), on_notify),
            "dump",
            images / "dump.log",
        )
    finally:
        os.close(images_fd)
