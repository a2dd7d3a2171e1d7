"""Finishing a migration, on whichever side this agent was: commit or roll back.

Idempotent: a commit removes the source's frozen original (after a post-copy's
memory has been pulled) and keeps the target's copy; a rollback continues the
original on the source and discards the target's copy.
"""

from __future__ import annotations

import asyncio

from ..records import ProcessRecord, Ref, State
from ..runtime.lifecycle import Lifecycle
from ..runtime.process_table import ProcessTable
from .directory import MigrationDirs
from .source import CheckpointSource
from .target import CheckpointTarget


class MigrationFinisher:
    def __init__(
        self,
        *,
        table: ProcessTable,
        lifecycle: Lifecycle,
        source: CheckpointSource,
        target: CheckpointTarget,
        dirs: MigrationDirs,
    ) -> None:
        self._table = table
        self._lifecycle = lifecycle
        self._source = source
        self._target = target
        self._dirs = dirs
        self._cleanups: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly

    async def finish(self, migration_id: str, ref: Ref, commit: bool, timeout: float) -> str:
        async with self._dirs.lock(migration_id):
            meta = self._dirs.read_meta(migration_id) or {}
            record = self._table.find(ref)
            frozen_here = (
                record is not None
                and record.state == State.FROZEN
                and record.migration_id == migration_id
            )
            if (
                self._source.outgoing(migration_id) is not None
                or frozen_here
                or meta.get("role") == "source"
            ):
                return await self._finish_source(migration_id, ref, commit, timeout)
            if meta.get("role") == "target" or (
                record is not None and record.migration_id == migration_id
            ):
                return await self._finish_target(migration_id, ref, commit, record)
            return "nothing to do"  # e.g. the source already resumed it itself

    async def _finish_source(
        self, migration_id: str, ref: Ref, commit: bool, timeout: float
    ) -> str:
        if not commit:
            resumed = await self._source.resume(migration_id, ref, "the migration was rolled back")
            return "resumed" if resumed else "nothing to do (not frozen here)"
        outcome = "removed"
        out = self._source.outgoing(migration_id)
        if out is not None and out.dump is not None and not out.dump.done():
            # Post-copy: the target still pulls memory from this frozen original.
            try:
                await asyncio.wait_for(asyncio.shield(out.dump), timeout)
                outcome = "removed after its memory was served"
            except TimeoutError:
                outcome = f"removed; the target had not pulled all memory after {timeout:.0f}s"
            except Exception as exc:
                outcome = f"removed; CRIU's page server ended with: {exc}"
        await self._source.close(migration_id)
        record = self._table.find(ref)
        if record is not None and record.migration_id == migration_id:
            await self._lifecycle.stop_process(ref, grace=0, message=f"migrated ({migration_id})")
        self._dirs.remove(migration_id)
        return outcome

    async def _finish_target(
        self, migration_id: str, ref: Ref, commit: bool, record: ProcessRecord | None
    ) -> str:
        if commit:
            if not self._target.pulling(migration_id):
                self._dirs.remove(migration_id)
            else:  # the lazy-pages daemon still reads the images: clean up after it
                cleanup = asyncio.get_running_loop().create_task(
                    self._remove_when_pulled(migration_id)
                )
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
            return "kept"
        await self._target.stop_lazy_pages(migration_id)
        outcome = "discarded the received checkpoint"
        if record is not None and record.migration_id == migration_id:
            await self._lifecycle.stop_process(ref, grace=0, message="migration rolled back")
            outcome = "killed the restored copy and discarded the checkpoint"
        self._dirs.remove(migration_id)
        return outcome

    async def _remove_when_pulled(self, migration_id: str) -> None:
        await self._target.pulled(migration_id)
        self._dirs.remove(migration_id)
