"""The target's side of a migration: receive the checkpoint, restore it, and for
post-copy run CRIU's lazy-pages daemon, which pulls the memory from the source.

The target restores only when told to, once, from a checkpoint it received
completely (every file's checksum checked). CRIU restores open files and the
working directory at the paths they had on the source, so agents must use the
same --state-dir path on every node (the DaemonSet's hostPath; the local cluster
bind-mounts each node's directory at one path in a mount namespace per node).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.auth.identity import Identity

from .. import convert
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ..records import ProcessRecord, Ref
from ..runtime.criu import LAZY_READY_TIMEOUT, CriuInfo, log_tail, usable_binary
from ..runtime.launcher import own_tree
from ..runtime.lifecycle import Lifecycle
from ..runtime.process_table import ProcessTable
from ..runtime.sandbox import SandboxError, checked_stdio_keys
from ..runtime.validation import check_label
from ..storage.record_store import RecordStore
from .directory import MigrationDirs
from .page_tunnel import Tunnel
from .permits import Permits
from .transfer import ReceiveLimits, Receiver

log = logging.getLogger(__name__)


class CheckpointTarget:
    def __init__(
        self,
        node_name: str,
        *,
        table: ProcessTable,
        store: RecordStore,
        lifecycle: Lifecycle,
        dirs: MigrationDirs,
        criu: CriuInfo | None,
        permits: Permits,
        limits: ReceiveLimits | None = None,
    ) -> None:
        self._node_name = node_name
        self._table = table
        self._store = store
        self._lifecycle = lifecycle
        self._dirs = dirs
        self._criu = criu
        self._limits = limits or ReceiveLimits()
        self._permits = permits
        self._lazy: dict[str, asyncio.subprocess.Process] = {}
        self._tunnels: dict[str, Tunnel] = {}  # post-copy with TLS
        self._reapers: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly

    async def receive(
        self, stream: AsyncIterator[pb.CheckpointChunk], sender: Identity | None = None
    ) -> int:
        """Take a checkpoint in (with TLS: only as the operator's ticket says, from the
        agent it names: permits.py)."""
        usable_binary(self._criu, self._node_name)
        first = await anext(stream, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("a checkpoint stream must start with its header")
        header = first.header
        self._permits.to_receive(header, sender)
        ref = _checked_ref(header)  # before any path is built from the sender's names
        self._dirs.path(header.migration_id)
        if ref in self._table:
            raise AlreadyExists(f"process {ref} already exists on node {self._node_name}")
        expected_workdir = str(self._store.dir(ref) / "work")
        if header.workdir != expected_workdir:
            raise FailedPrecondition(
                f"the source keeps the process at {header.workdir}, this node at "
                f"{expected_workdir}: CRIU restores files at their original paths, so every "
                "agent needs the same --state-dir path"
            )
        async with self._dirs.lock(header.migration_id):
            directory = self._dirs.fresh(header.migration_id)
            meta = {
                "role": "target",
                "state": "receiving",
                "created": time.time(),
                "header": header.SerializeToString().hex(),
            }
            self._dirs.write_meta(header.migration_id, meta)
            receiver = Receiver(directory, self._limits)
            try:
                async for chunk in stream:
                    await asyncio.to_thread(receiver.feed, chunk)
                if receiver.done is None:
                    raise InvalidArgument("the checkpoint stream ended early")
            except BaseException:
                self._dirs.remove(header.migration_id)
                raise
            finally:
                receiver.close()
            meta["state"] = "received"
            self._dirs.write_meta(header.migration_id, meta)
        return receiver.received_bytes

    def _meta(self, migration_id: str) -> tuple[dict[str, Any], pb.CheckpointHeader]:
        meta = self._dirs.read_meta(migration_id)
        if not meta or meta.get("role") != "target":
            raise NotFound(f"no checkpoint received for migration {migration_id}")
        return meta, pb.CheckpointHeader.FromString(bytes.fromhex(meta["header"]))

    async def restore(self, migration_id: str) -> tuple[ProcessRecord, float, float]:
        """(record, when it resumed, seconds the restore took)."""
        binary = usable_binary(self._criu, self._node_name)
        async with self._dirs.lock(migration_id):
            directory = self._dirs.path(migration_id)
            meta, header = self._meta(migration_id)
            _checked_ref(header)  # as at receive: never a path from an unchecked name
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
            own_tree(str(process_dir / "work"), spec.security)  # received files are root's
            stdio = _stdio_keys(directory / "images")
            lazy = header.mode == pb.MIGRATION_MODE_POST_COPY
            if lazy:
                await self._start_lazy_pages(migration_id, binary, directory / "images", header)
            try:
                record = await self._lifecycle.restore_process(
                    spec,
                    uid=header.process.uid,
                    restarts=header.process.restarts,
                    migration_id=migration_id,
                    restore={
                        "criu": binary,
                        "images": str(directory / "images"),
                        "lazy": lazy,
                        "stdio": {str(fd): key for fd, key in stdio.items()},
                    },
                    lease=(
                        convert.lease_from_pb(header.process.lease)
                        if header.process.HasField("lease")
                        else None
                    ),
                )
            except BaseException:
                await self.stop_lazy_pages(migration_id)
                meta["state"] = "received"  # nothing runs; a retry may try again
                self._dirs.write_meta(migration_id, meta)
                raise
            resumed_at = record.last_started_at
            meta.update(
                state="restored", resumed_at=resumed_at, restore_seconds=time.time() - started
            )
            self._dirs.write_meta(migration_id, meta)
            return record, resumed_at, meta["restore_seconds"]

    # ----- post-copy: the lazy-pages daemon ---------------------------------

    async def _start_lazy_pages(
        self, migration_id: str, binary: str, images: Path, header: pb.CheckpointHeader
    ) -> None:
        """CRIU's lazy-pages daemon: pulls memory from the source's page server and
        hands it to the restored process on its page faults (userfaultfd)."""
        where, inherit = await self._page_source(migration_id, header)
        proc = await asyncio.create_subprocess_exec(
            binary,
            "lazy-pages",
            "--page-server",
            *where,
            "-D",
            str(images),
            "-o",
            "lazy-pages.log",
            "-v4",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            pass_fds=inherit,
        )
        tunnel = self._tunnels.get(migration_id)
        if tunnel is not None:
            tunnel.release_criu_end()
        self._lazy[migration_id] = proc
        # The restore connects to the daemon's socket in the images dir: wait for it.
        deadline = time.monotonic() + LAZY_READY_TIMEOUT
        while not (images / "lazy-pages.socket").exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                await self.stop_lazy_pages(migration_id)
                raise FailedPrecondition(
                    "CRIU's lazy-pages daemon did not start: "
                    + (log_tail(images / "lazy-pages.log") or "no reason logged")
                )
            await asyncio.sleep(0.005)
        reaper = asyncio.get_running_loop().create_task(self._reap_lazy(migration_id, proc, images))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _page_source(
        self, migration_id: str, header: pb.CheckpointHeader
    ) -> tuple[list[str], tuple[int, ...]]:
        """The lazy-pages daemon's way to the source's memory (its arguments, and the
        fds it inherits): the source's page server itself (no TLS), or this agent's
        page tunnel to the ticket's source (permits.py checked the header's)."""
        tls = self._permits.tls
        if tls is None:
            host, _, port = header.page_server.rpartition(":")
            return ["--address", host, "--port", port], ()
        tunnel = Tunnel()
        self._tunnels[migration_id] = tunnel
        try:
            await tunnel.dial(tls, header.page_server, header.source_node)
        except BaseException:
            await self._close_tunnel(migration_id)
            raise
        fd = tunnel.criu_end.fileno()
        return ["--ps-socket", str(fd)], (fd,)

    async def _close_tunnel(self, migration_id: str) -> None:
        tunnel = self._tunnels.pop(migration_id, None)
        if tunnel is not None:
            await tunnel.close()

    async def _reap_lazy(
        self, migration_id: str, proc: asyncio.subprocess.Process, images: Path
    ) -> None:
        code = await proc.wait()
        self._lazy.pop(migration_id, None)
        await self._close_tunnel(migration_id)
        if code != 0:
            log.warning(
                "lazy-pages daemon of migration %s exited %d: %s",
                migration_id,
                code,
                log_tail(images / "lazy-pages.log"),
            )
        else:
            log.info("migration %s: all memory pulled from the source", migration_id)

    def pulling(self, migration_id: str) -> bool:
        """Whether the migration's lazy-pages daemon still pulls memory (and reads its images)."""
        return migration_id in self._lazy

    async def pulled(self, migration_id: str) -> None:
        """Returns once the migration's lazy-pages daemon (if any) has ended."""
        proc = self._lazy.get(migration_id)
        if proc is not None:
            await proc.wait()

    async def stop_lazy_pages(self, migration_id: str) -> None:
        proc = self._lazy.pop(migration_id, None)
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await self._close_tunnel(migration_id)


def _checked_ref(header: pb.CheckpointHeader) -> Ref:
    """The process a checkpoint is for, its names checked as every RPC checks them."""
    ref = convert.ref_from_pb(
        pb.ProcessRef(namespace=header.process.spec.owner.namespace, name=header.process.spec.name)
    )
    check_label("name", ref.name)
    check_label("namespace", ref.namespace)
    return ref


def _stdio_keys(images: Path) -> dict[int, str]:
    """The source's names of the process's stdio files (stdio.json), checked: they only
    say which of this node's files (/dev/null, the log) CRIU hands to which fd."""
    try:
        return checked_stdio_keys(json.loads((images / "stdio.json").read_bytes()))
    except FileNotFoundError:
        return {}
    except (ValueError, SandboxError) as exc:
        raise InvalidArgument(f"the checkpoint's stdio.json is unusable: {exc}") from None
