"""Adoption after an agent restart: re-adopting what a previous agent left.

Processes that still run keep running and are watched again (PIDs checked
against their start times, so a reused PID is never taken for ours); those that
ended meanwhile are reported (observed_after_agent_restart) and their restart
policy applied; a start or stop the previous agent was in the middle of is finished.
"""

from __future__ import annotations

import logging
import os
import time

from ..cgroup import CgroupDriver
from ..records import ProcessRecord, State
from ..storage.record_store import RecordStore
from .launcher import Launcher
from .lifecycle import Lifecycle
from .limits import Leases
from .process_table import Live, ProcessTable
from .procfs import open_pidfd

log = logging.getLogger(__name__)


class Adoption:
    def __init__(
        self,
        table: ProcessTable,
        store: RecordStore,
        *,
        launcher: Launcher,
        lifecycle: Lifecycle,
        leases: Leases,
        driver: CgroupDriver,
    ) -> None:
        self._table = table
        self._store = store
        self._launcher = launcher
        self._lifecycle = lifecycle
        self._leases = leases
        self._driver = driver

    async def recover(self) -> None:
        """Re-adopt what the previous agent left: running processes keep running
        and are watched again; those that ended meanwhile are reported."""
        for record in self._store.load_all():
            live = self._table.add(record)
            # Time spent down is not counted against a lease: its clock starts again.
            self._leases.arm(record, live)
            try:
                self._recover_one(record, live)
            except Exception:
                log.exception("could not re-adopt %s", record.ref)

    def _recover_one(self, record: ProcessRecord, live: Live) -> None:
        if record.state == State.BACKOFF:
            self._lifecycle.restart_later(
                record, live, max(0.0, record.next_restart_at - time.time())
            )
            return
        if record.state not in (State.RUNNING, State.PENDING, State.STOPPING, State.FROZEN):
            return
        run = record.run or self._launcher.run_from_shim(record)
        if run is None and record.state == State.STOPPING:
            # Stopping and nothing ran: finish the stop, do not start it again.
            self._lifecycle.stop_later(record, live)
            return
        if run is None:
            # The agent died before this run started: start it now, as the same attempt.
            self._driver.kill(record.cgroup)
            record.state = State.PENDING
            self._lifecycle.restart_later(record, live, 0.0, is_restart=False)
            return
        record.run = run
        shim_fd = open_pidfd(run.shim_pid, run.shim_start)
        if shim_fd is not None:
            os.close(shim_fd)
            log.info("re-adopted %s (pid %d)", record.ref, run.pid)
            if record.state == State.PENDING:
                record.state = State.RUNNING
                self._table.save(record)
            self._lifecycle.watch(record, live, run.shim_pid, run.shim_start)
        elif (child_fd := open_pidfd(run.pid, run.pid_start)) is not None:
            os.close(child_fd)
            # The shim is gone but the process lives: watch the process itself;
            # its exit status will be unknown.
            log.warning("%s outlived its shim; its exit status will be lost", record.ref)
            self._lifecycle.watch(record, live, run.pid, run.pid_start)
        else:
            self._lifecycle.run_ended(record, live, run, observed_after_restart=True)
        if record.state == State.STOPPING:
            self._lifecycle.stop_later(record, live)
