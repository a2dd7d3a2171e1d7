"""Live migration, the agent's part: checkpoint and send (source), receive and
restore (target), and finish (commit or roll back) on either side.

The operator sequences the steps (see the operator's migrator.py); each step
here is safe on its own:
- The source freezes the process with CRIU and leaves it *stopped*, never
  killed (leave_stopped), so a rollback only has to continue it. If anything
  fails before the target holds the checkpoint, the source resumes the process
  itself before reporting the error.
- The target restores only when told to, once, from a checkpoint it received
  completely (every file's checksum checked).
- Finishing is idempotent: a commit removes the frozen original (after a
  post-copy's memory has been pulled), a rollback continues it on the source
  and discards the target's copy.

Paths: CRIU restores open files and the working directory at the paths they had
on the source, so agents must use the same --state-dir path on every node (the
DaemonSet's hostPath; the local cluster bind-mounts each node's directory at one
path in a mount namespace per node).

On disk, per migration: <state>/migrations/<id>/ with meta.json (what it is and
how far it got), images/ (CRIU's checkpoint), and, on the target until the
restore, work/ and logs/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.criu import rpc_pb2 as rpc
from serverlessos.files import atomic_write_json, read_json

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..rpc import convert
from ..runtime.freezing import Freezer
from ..runtime.lifecycle import Lifecycle
from ..runtime.process_table import ProcessTable
from ..runtime.records import ProcessRecord, Ref, State
from ..storage.record_store import RecordStore
from .criu import CriuError, CriuInfo, Swrk, checked, log_tail
from .transfer import Receiver, Source, chunks

log = logging.getLogger(__name__)

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
LAZY_READY_TIMEOUT = 30.0
LEFTOVER_TTL = 3600.0  # received checkpoints nobody restored are removed after this

Progress = Callable[[pb.CheckpointProgress], Awaitable[None]]


@dataclass
class _Outgoing:
    """Source side, while the migration is open."""

    migration_id: str
    ref: Ref
    swrk: Swrk | None = None
    dump: asyncio.Future[Any] | None = (
        None  # the CRIU dump call (post-copy: until pages are served)
    )


@dataclass
class _Locks:
    by_id: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __call__(self, migration_id: str) -> asyncio.Lock:
        return self.by_id.setdefault(migration_id, asyncio.Lock())


def _free_port(host: str) -> int:
    """A port for CRIU's page server (CRIU needs a number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _dir_size(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


class Migrations:
    def __init__(
        self,
        node_name: str,
        *,
        table: ProcessTable,
        store: RecordStore,
        lifecycle: Lifecycle,
        freezer: Freezer,
        root: Path,
        criu: CriuInfo | None,
        page_server_host: str,
    ) -> None:
        self.node_name = node_name
        self._table = table
        self._store = store
        self._lifecycle = lifecycle
        self._freezer = freezer
        self.criu = criu
        self.page_server_host = page_server_host
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._out: dict[str, _Outgoing] = {}
        self._lazy: dict[str, asyncio.subprocess.Process] = {}
        self._lock = _Locks()

    def _criu(self) -> str:
        if self.criu is None:
            raise FailedPrecondition(f"node {self.node_name} has no CRIU: it cannot migrate")
        if not self.criu.usable:
            raise FailedPrecondition(
                f"CRIU on node {self.node_name} is not usable: {self.criu.problem}"
            )
        return self.criu.path

    def _dir(self, migration_id: str) -> Path:
        if not migration_id or "/" in migration_id or migration_id.startswith("."):
            raise InvalidArgument(f"bad migration id {migration_id!r}")
        return self.root / migration_id

    # ----- source ----------------------------------------------------------

    async def checkpoint(
        self, ref: Ref, migration_id: str, target: str, mode: int, progress: Progress
    ) -> None:
        """Freeze, dump, send. On failure the process runs on here before this raises."""
        binary = self._criu()
        if not target:
            raise InvalidArgument("target_endpoint is required")
        if mode not in (pb.MIGRATION_MODE_STOP_AND_COPY, pb.MIGRATION_MODE_POST_COPY):
            raise InvalidArgument(f"unsupported migration mode {mode}")
        lazy = mode == pb.MIGRATION_MODE_POST_COPY
        async with self._lock(migration_id):
            record = await self._freezer.freeze(ref, migration_id)
            assert record.run is not None
            directory = self._dir(migration_id)
            shutil.rmtree(directory, ignore_errors=True)
            images = directory / "images"
            images.mkdir(parents=True)
            atomic_write_json(
                directory / "meta.json",
                {"role": "source", "ref": [ref.namespace, ref.name], "created": time.time()},
            )
            out = _Outgoing(migration_id, ref)
            self._out[migration_id] = out
            try:
                page_server = ""
                started = time.time()
                frozen_at = started
                if lazy:
                    port = _free_port(self.page_server_host)
                    page_server = f"{self.page_server_host}:{port}"
                    frozen_at = await self._dump_lazy(out, binary, record, images, port)
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
                await self._resume_source(migration_id, ref, out, f"checkpoint failed: {reason}")
                raise

    async def _dump(
        self, out: _Outgoing, binary: str, record: ProcessRecord, images: Path
    ) -> float:
        """Stop-and-copy: dump everything, leave the tree stopped. Returns when it froze."""
        frozen = [time.time()]
        out.swrk = Swrk(binary)
        loop = asyncio.get_running_loop()
        out.dump = loop.run_in_executor(
            None, self._dump_call, out.swrk, record, images, None, None, frozen
        )
        try:
            await out.dump
        finally:
            out.swrk.close()
            out.swrk = None
        return frozen[0]

    async def _dump_lazy(
        self, out: _Outgoing, binary: str, record: ProcessRecord, images: Path, port: int
    ) -> float:
        """Post-copy: dump all but memory; CRIU then serves the memory on `port` until
        the target has pulled it (the dump call ends then). Returns once the images
        are complete, which CRIU signals on its status fd."""
        frozen = [time.time()]
        ready_r, ready_w = os.pipe()
        out.swrk = Swrk(binary)
        loop = asyncio.get_running_loop()
        ps = rpc.PageServerInfo(address=self.page_server_host, port=port)
        out.dump = loop.run_in_executor(
            None, self._dump_call, out.swrk, record, images, ps, ready_w, frozen
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

    def _dump_call(  # noqa: PLR0917 (run_in_executor passes positionals)
        self,
        swrk: Swrk,
        record: ProcessRecord,
        images: Path,
        ps: rpc.PageServerInfo | None,
        status_fd: int | None,
        frozen: list[float],
    ) -> None:
        assert record.run is not None
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
            )
            if ps is not None:
                options.lazy_pages = True
                options.ps.CopyFrom(ps)
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

    async def _send(
        self,
        record: ProcessRecord,
        migration_id: str,
        target: str,
        *,
        mode: int,
        page_server: str,
        frozen_at: float,
    ) -> int:
        directory = self._dir(migration_id)
        header = pb.CheckpointHeader(
            migration_id=migration_id,
            source_node=self.node_name,
            mode=mode,  # type: ignore[arg-type]
            process=convert.process_to_pb(record),
            log_path=record.log_path,
            workdir=record.workdir,
            page_server=page_server,
            frozen_at=frozen_at,
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

        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.AgentStub(channel)
            try:
                reply = await stub.ReceiveCheckpoint(stream(), timeout=TRANSFER_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                raise FailedPrecondition(
                    f"sending the checkpoint to {target} failed: {exc.code().name}: {exc.details()}"
                ) from exc
        return int(reply.received_bytes)

    async def _resume_source(
        self, migration_id: str, ref: Ref, out: _Outgoing | None, why: str
    ) -> bool:
        """Undo the source's side (a failed checkpoint, or a rollback): stop CRIU,
        continue the process. False if it was not frozen here for this migration."""
        if out is not None:
            if out.swrk is not None:
                out.swrk.kill()  # a killed CRIU lets go of (and continues) the seized tree
            if out.dump is not None:
                with contextlib.suppress(BaseException):
                    await out.dump
            if out.swrk is not None:
                out.swrk.close()  # reaps it
                out.swrk = None
        self._out.pop(migration_id, None)
        resumed = await self._freezer.resume(ref, migration_id, why)
        shutil.rmtree(self._dir(migration_id), ignore_errors=True)
        return resumed

    # ----- target ----------------------------------------------------------

    async def receive(self, stream: AsyncIterator[pb.CheckpointChunk]) -> int:
        self._criu()
        first = await anext(stream, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("a checkpoint stream must start with its header")
        header = first.header
        ref = convert.ref_from_pb(
            pb.ProcessRef(
                namespace=header.process.spec.owner.namespace, name=header.process.spec.name
            )
        )
        if ref in self._table:
            raise AlreadyExists(f"process {ref} already exists on node {self.node_name}")
        expected_workdir = str(self._store.dir(ref) / "work")
        if header.workdir != expected_workdir:
            raise FailedPrecondition(
                f"the source keeps the process at {header.workdir}, this node at "
                f"{expected_workdir}: CRIU restores files at their original paths, so every "
                "agent needs the same --state-dir path"
            )
        async with self._lock(header.migration_id):
            directory = self._dir(header.migration_id)
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            meta = {
                "role": "target",
                "state": "receiving",
                "created": time.time(),
                "header": header.SerializeToString().hex(),
            }
            atomic_write_json(directory / "meta.json", meta)
            receiver = Receiver(directory)
            try:
                async for chunk in stream:
                    await asyncio.to_thread(receiver.feed, chunk)
                if receiver.done is None:
                    raise InvalidArgument("the checkpoint stream ended early")
            except BaseException:
                receiver.close()
                shutil.rmtree(directory, ignore_errors=True)
                raise
            meta["state"] = "received"
            atomic_write_json(directory / "meta.json", meta)
        return receiver.received_bytes

    def _meta(self, migration_id: str) -> tuple[dict[str, Any], pb.CheckpointHeader]:
        meta = read_json(self._dir(migration_id) / "meta.json")
        if not meta or meta.get("role") != "target":
            raise NotFound(f"no checkpoint received for migration {migration_id}")
        return meta, pb.CheckpointHeader.FromString(bytes.fromhex(meta["header"]))

    async def restore(self, migration_id: str) -> tuple[ProcessRecord, float, float]:
        """(record, when it resumed, seconds the restore took)."""
        binary = self._criu()
        async with self._lock(migration_id):
            directory = self._dir(migration_id)
            meta, header = self._meta(migration_id)
            spec = convert.spec_from_pb(header.process.spec)
            if meta["state"] == "restored":
                record = self._table.get(spec.ref)
                return record, float(meta["resumed_at"]), float(meta["restore_seconds"])
            if meta["state"] != "received":
                raise FailedPrecondition(f"the checkpoint of {migration_id} is {meta['state']}")
            started = time.time()
            # The process's files go where CRIU expects them (the same paths as on the source).
            process_dir = self._store.prepare(spec.ref)
            for sub in ("work", "logs"):
                if (directory / sub).exists():
                    shutil.rmtree(process_dir / sub, ignore_errors=True)
                    os.replace(directory / sub, process_dir / sub)
            lazy = header.mode == pb.MIGRATION_MODE_POST_COPY
            if lazy:
                await self._start_lazy_pages(migration_id, binary, directory / "images", header)
            try:
                record = await self._lifecycle.restore_process(
                    spec,
                    uid=header.process.uid,
                    restarts=header.process.restarts,
                    migration_id=migration_id,
                    restore={"criu": binary, "images": str(directory / "images"), "lazy": lazy},
                    lease=(
                        convert.lease_from_pb(header.process.lease)
                        if header.process.HasField("lease")
                        else None
                    ),
                )
            except BaseException:
                await self._stop_lazy_pages(migration_id)
                meta["state"] = "received"  # nothing runs; a retry may try again
                atomic_write_json(directory / "meta.json", meta)
                raise
            resumed_at = record.last_started_at
            meta.update(
                state="restored", resumed_at=resumed_at, restore_seconds=time.time() - started
            )
            atomic_write_json(directory / "meta.json", meta)
            return record, resumed_at, meta["restore_seconds"]

    async def _start_lazy_pages(
        self, migration_id: str, binary: str, images: Path, header: pb.CheckpointHeader
    ) -> None:
        """CRIU's lazy-pages daemon: pulls memory from the source's page server and
        hands it to the restored process on its page faults (userfaultfd)."""
        host, _, port = header.page_server.rpartition(":")
        proc = await asyncio.create_subprocess_exec(
            binary,
            "lazy-pages",
            "--page-server",
            "--address",
            host,
            "--port",
            port,
            "-D",
            str(images),
            "-o",
            "lazy-pages.log",
            "-v4",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._lazy[migration_id] = proc
        # The restore connects to the daemon's socket in the images dir: wait for it.
        deadline = time.monotonic() + LAZY_READY_TIMEOUT
        while not (images / "lazy-pages.socket").exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                await self._stop_lazy_pages(migration_id)
                raise FailedPrecondition(
                    "CRIU's lazy-pages daemon did not start: "
                    + (log_tail(images / "lazy-pages.log") or "no reason logged")
                )
            await asyncio.sleep(0.005)
        asyncio.get_running_loop().create_task(self._reap_lazy(migration_id, proc, images))

    async def _reap_lazy(
        self, migration_id: str, proc: asyncio.subprocess.Process, images: Path
    ) -> None:
        code = await proc.wait()
        self._lazy.pop(migration_id, None)
        if code != 0:
            log.warning(
                "lazy-pages daemon of migration %s exited %d: %s",
                migration_id,
                code,
                log_tail(images / "lazy-pages.log"),
            )
        else:
            log.info("migration %s: all memory pulled from the source", migration_id)

    async def _stop_lazy_pages(self, migration_id: str) -> None:
        proc = self._lazy.pop(migration_id, None)
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    # ----- both ------------------------------------------------------------

    async def finish(self, migration_id: str, ref: Ref, commit: bool, timeout: float) -> str:
        async with self._lock(migration_id):
            directory = self._dir(migration_id)
            meta = read_json(directory / "meta.json") or {}
            record = self._table.find(ref)
            out = self._out.get(migration_id)
            frozen_here = (
                record is not None
                and record.state == State.FROZEN
                and record.migration_id == migration_id
            )
            if out is not None or frozen_here or meta.get("role") == "source":
                return await self._finish_source(migration_id, ref, commit, timeout, out)
            if meta.get("role") == "target" or (
                record is not None and record.migration_id == migration_id
            ):
                return await self._finish_target(migration_id, ref, commit, record)
            return "nothing to do"  # e.g. the source already resumed it itself

    async def _finish_source(
        self, migration_id: str, ref: Ref, commit: bool, timeout: float, out: _Outgoing | None
    ) -> str:
        if not commit:
            resumed = await self._resume_source(
                migration_id, ref, out, "the migration was rolled back"
            )
            return "resumed" if resumed else "nothing to do (not frozen here)"
        outcome = "removed"
        if out is not None and out.dump is not None and not out.dump.done():
            # Post-copy: the target still pulls memory from this frozen original.
            try:
                await asyncio.wait_for(asyncio.shield(out.dump), timeout)
                outcome = "removed after its memory was served"
            except TimeoutError:
                outcome = f"removed; the target had not pulled all memory after {timeout:.0f}s"
            except Exception as exc:
                outcome = f"removed; CRIU's page server ended with: {exc}"
        if out is not None and out.swrk is not None:
            out.swrk.kill()
            out.swrk.close()
        self._out.pop(migration_id, None)
        record = self._table.find(ref)
        if record is not None and record.migration_id == migration_id:
            await self._lifecycle.stop_process(ref, grace=0, message=f"migrated ({migration_id})")
        shutil.rmtree(self._dir(migration_id), ignore_errors=True)
        return outcome

    async def _finish_target(
        self, migration_id: str, ref: Ref, commit: bool, record: ProcessRecord | None
    ) -> str:
        directory = self._dir(migration_id)
        if commit:
            if migration_id not in self._lazy:
                shutil.rmtree(directory, ignore_errors=True)
            else:  # the lazy-pages daemon still reads the images: clean up after it
                asyncio.get_running_loop().create_task(self._cleanup_after_lazy(migration_id))
            return "kept"
        await self._stop_lazy_pages(migration_id)
        outcome = "discarded the received checkpoint"
        if record is not None and record.migration_id == migration_id:
            await self._lifecycle.stop_process(ref, grace=0, message="migration rolled back")
            outcome = "killed the restored copy and discarded the checkpoint"
        shutil.rmtree(directory, ignore_errors=True)
        return outcome

    async def _cleanup_after_lazy(self, migration_id: str) -> None:
        proc = self._lazy.get(migration_id)
        if proc is not None:
            await proc.wait()
        shutil.rmtree(self._dir(migration_id), ignore_errors=True)

    def remove_leftovers(self) -> None:
        """Received checkpoints never restored nor finished (their operator gave up)."""
        now = time.time()
        for meta_path in self.root.glob("*/meta.json"):
            meta = read_json(meta_path) or {}
            stale = now - float(meta.get("created", now)) > LEFTOVER_TTL
            if meta.get("role") == "target" and meta.get("state") != "restored" and stale:
                shutil.rmtree(meta_path.parent, ignore_errors=True)
