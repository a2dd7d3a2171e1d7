"""Freezing a process for a migration, and resuming it when the migration rolls back.

The record is marked FROZEN before CRIU dumps the process (CRIU leaves the tree
stopped), and once dumped its cgroup is frozen too (hold); a rollback thaws the
cgroup and continues the tree (resume); a commit stops it (lifecycle).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

from ..cgroup import CgroupDriver
from ..errors import FailedPrecondition
from ..records import ProcessRecord, Ref, State
from ..storage.event_journal import EventType
from .process_table import ProcessTable

log = logging.getLogger(__name__)


class Freezer:
    def __init__(self, table: ProcessTable, driver: CgroupDriver) -> None:
        self._table = table
        self._driver = driver

    async def freeze(self, ref: Ref, migration_id: str) -> ProcessRecord:
        """Mark a running process frozen for a migration (CRIU freezes it next)."""
        record = self._table.get(ref)
        live = self._table.live(ref)
        async with live.lock:
            if record.state == State.FROZEN and record.migration_id == migration_id:
                return record
            if record.state != State.RUNNING or record.run is None:
                raise FailedPrecondition(
                    f"process {ref} is {record.state}, not Running: only a running process "
                    "can be checkpointed"
                )
            record.state = State.FROZEN
            record.migration_id = migration_id
            record.message = f"frozen for migration {migration_id}"
            self._table.save(record)
            self._table.emit(record, EventType.FROZEN, record.message)
        return record

    def hold(self, record: ProcessRecord) -> None:
        """Freeze the checkpointed tree in its cgroup too. CRIU's stop is not enough:
        a CRIU that fails late (e.g. post-copy's page server losing the target after
        the target resumed) detaches and lets the tree run, which would make two
        copies. Frozen, it runs again only by a rollback (resume)."""
        try:
            held = self._driver.freeze(record.cgroup, True)
        except FailedPrecondition as exc:
            held = False
            log.warning("cannot freeze %s's cgroup: %s", record.ref, exc)
        if not held:
            log.warning(
                "%s: no cgroup freezer; the checkpointed process is held by CRIU's stop only",
                record.ref,
            )

    async def resume(self, ref: Ref, migration_id: str, why: str) -> bool:
        """Roll a migration back on the source: the frozen process runs on. False if
        it was not frozen for that migration."""
        entry = self._table.entry(ref)
        if entry is None:
            return False
        record, live = entry
        async with live.lock:
            if record.state != State.FROZEN or record.migration_id != migration_id:
                return False
            # Thaw the cgroup (hold froze it), then SIGCONT: CRIU leaves the tree stopped.
            with contextlib.suppress(FailedPrecondition):
                self._driver.freeze(record.cgroup, False)
            for pid in self._driver.pids(record.cgroup):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            record.state = State.RUNNING if record.run is not None else record.state
            record.migration_id = ""
            record.message = f"resumed: {why}"
            self._table.save(record)
            self._table.emit(record, EventType.RESUMED, record.message)
        return True
