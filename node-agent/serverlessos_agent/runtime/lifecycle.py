"""A process's life on this node: its start (a record and its first run, started or
restored from a checkpoint), its exits turned into terminations and restarts (with
back-off), and its stop. It knows nothing of gRPC; the servicer translates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cgroup import CgroupDriver
from ..errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from ..records import Lease, ProcessRecord, ProcessSpec, Reason, Ref, Run, State, Termination
from ..storage.event_journal import EventType
from ..storage.record_store import RecordStore
from .launcher import Launcher
from .limits import Leases
from .process_table import Live, ProcessTable
from .restart_policy import Backoff, should_restart
from .validation import NodeCapacity, check_lease, check_spec

log = logging.getLogger(__name__)

KILL_WAIT = 10.0


@dataclass(frozen=True)
class LifecycleConfig:
    default_grace: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    max_processes: int = 1000  # records this node keeps at once (--max-processes)


class Lifecycle:
    def __init__(
        self,
        config: LifecycleConfig,
        table: ProcessTable,
        store: RecordStore,
        *,
        launcher: Launcher,
        leases: Leases,
        driver: CgroupDriver,
        capacity: Callable[[], NodeCapacity],
        privilege_problems: list[str],
    ) -> None:
        self._config = config
        self._table = table
        self._store = store
        self._launcher = launcher
        self._leases = leases
        self._driver = driver
        self._capacity = capacity
        self._privilege_problems = privilege_problems

    # ----- start ---------------------------------------------------------

    async def start_process(self, spec: ProcessSpec, lease: Lease | None = None) -> ProcessRecord:
        return await self._create(spec, uid=uuid.uuid4().hex, lease=lease)

    async def restore_process(
        self,
        spec: ProcessSpec,
        *,
        uid: str,
        restarts: int,
        migration_id: str,
        restore: dict[str, Any],
        lease: Lease | None = None,
    ) -> ProcessRecord:
        """Run a process from a checkpoint (the target of a migration): like a start,
        but CRIU restores it. Raises (leaving nothing) if the restore fails. A leased
        share stays leased here, its clock started again."""
        return await self._create(
            spec,
            uid=uid,
            restarts=restarts,
            migration_id=migration_id,
            restore=restore,
            lease=lease,
        )

    async def _create(
        self,
        spec: ProcessSpec,
        *,
        uid: str,
        restarts: int = 0,
        migration_id: str = "",
        restore: dict[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> ProcessRecord:
        """A new record and its first run (started, or restored from a checkpoint)."""
        capacity = self._capacity()
        check_spec(spec, capacity)
        if lease is not None:
            check_lease(lease, capacity)
        if self._privilege_problems:
            raise FailedPrecondition("; ".join(self._privilege_problems))
        existing = self._table.find(spec.ref)
        if existing is not None:
            raise AlreadyExists(
                f"process {spec.name!r} already exists in namespace {spec.namespace!r} "
                f"(state {existing.state}); stop it first"
            )
        if len(self._table) >= self._config.max_processes:
            raise ResourceExhausted(
                f"node keeps {len(self._table)} processes, its limit (--max-processes); "
                "place this one elsewhere"
            )
        directory = self._store.dir(spec.ref)
        record = ProcessRecord(
            uid=uid,
            spec=spec,
            state=State.PENDING,
            created_at=time.time(),
            cgroup=self._driver.group(spec.ref),
            log_path=str(directory / "logs" / "output.log"),
            workdir=str(directory / "work"),
            restarts=restarts,
            migration_id=migration_id,
            lease=lease,
        )
        # Claim the name before the first await, so a concurrent duplicate is refused.
        live = self._table.add(record)
        async with live.lock:
            try:
                self._store.prepare(spec.ref)
                self._table.save(record)
                self._leases.arm(record, live)
                await self._launch(record, live, restore)
            except Exception:
                # Nothing runs (a failed exec is not an exception): leave no trace.
                self._table.forget(record)
                self._store.delete(spec.ref)
                with contextlib.suppress(Exception):
                    self._driver.kill(record.cgroup)
                    await self._launcher.remove_cgroup(record.cgroup)
                raise
        return record

    async def _launch(
        self, record: ProcessRecord, live: Live, restore: dict[str, Any] | None = None
    ) -> None:
        outcome = await self._launcher.spawn(record, live, restore)
        if isinstance(outcome, Termination):
            self.ended(record, live, outcome, EventType.START_FAILED)
            return
        record.run = outcome
        record.state = State.RUNNING
        record.last_started_at = outcome.started_at
        record.message = ""
        record.next_restart_at = 0.0
        self._table.save(record)
        # Announce the start before watching: a run that already ended is reported
        # by watch() at once, and its exit must come after its start.
        if restore is not None:
            self._table.emit(
                record, EventType.RESTORED, f"restored from migration {record.migration_id}"
            )
        else:
            self._table.emit(
                record, EventType.STARTED if record.attempt == 0 else EventType.RESTARTED
            )
        self.watch(record, live, outcome.shim_pid, outcome.shim_start)

    def watch(self, record: ProcessRecord, live: Live, watch_pid: int, watch_start: int) -> None:
        """Have the run's end (the end of `watch_pid`: its shim, or the process itself)
        reported to this lifecycle."""
        self._launcher.watch(record, live, watch_pid, watch_start, self._run_ended)

    # ----- exits ---------------------------------------------------------

    def _run_ended(self, ref: Ref) -> None:
        entry = self._table.entry(ref)
        if entry is None or entry[0].run is None:
            return
        record, live = entry
        assert record.run is not None
        self.run_ended(record, live, record.run, observed_after_restart=False)

    def run_ended(
        self, record: ProcessRecord, live: Live, run: Run, *, observed_after_restart: bool
    ) -> None:
        termination = self._launcher.termination(
            record, run, observed_after_restart=observed_after_restart
        )
        kind = EventType.OOM_KILLED if termination.reason == Reason.OOM_KILLED else EventType.EXITED
        self.ended(record, live, termination, kind)

    def ended(
        self, record: ProcessRecord, live: Live, termination: Termination, kind: EventType
    ) -> None:
        live.close_fds()
        record.run = None
        record.last_termination = termination
        live.exited.set()
        if record.state == State.STOPPING:
            self._table.save(record)
            return  # stop_process takes it from here
        if should_restart(record.spec.restart_policy, termination):
            delay, record.backoff_step = self._config.backoff.after_exit(
                record.backoff_step, termination.finished_at - termination.started_at
            )
            record.state = State.BACKOFF
            record.next_restart_at = time.time() + delay
            record.message = f"restarting in {delay:g}s after: {termination.message}"
            self.restart_later(record, live, delay)
        else:
            record.state = (
                State.SUCCEEDED if termination.reason == Reason.COMPLETED else State.FAILED
            )
            record.message = termination.message
        self._table.save(record)
        self._table.emit(record, kind, termination.message)

    def restart_later(
        self, record: ProcessRecord, live: Live, delay: float, *, is_restart: bool = True
    ) -> None:
        """Run the record again after `delay`: as its next attempt, or (is_restart
        False: it never started) as the same one."""
        live.restart = asyncio.get_running_loop().create_task(
            self._restart_later(record.ref, delay, is_restart=is_restart)
        )

    async def _restart_later(self, ref: Ref, delay: float, *, is_restart: bool) -> None:
        await asyncio.sleep(delay)
        entry = self._table.entry(ref)
        if entry is None:
            return
        record, live = entry
        async with live.lock:
            if record.state not in (State.BACKOFF, State.PENDING):
                return
            live.restart = None
            if is_restart:
                record.attempt += 1
                record.restarts += 1
                # Recorded before the spawn: an agent killed during it finds this
                # attempt's shim.json (adopts it) or none (starts it), never a second copy.
                record.state = State.PENDING
                self._table.save(record)
            try:
                await self._launch(record, live)
            except Exception as exc:  # e.g. the fork server died: keep trying, say why
                log.exception("restart of %s failed", ref)
                now = time.time()
                self.ended(
                    record,
                    live,
                    Termination(Reason.START_ERROR, 127, 0, str(exc), now, now),
                    EventType.START_FAILED,
                )

    # ----- stop ----------------------------------------------------------

    async def stop_process(
        self, ref: Ref, grace: float | None = None, message: str = "stopped"
    ) -> ProcessRecord:
        record = self._table.get(ref)
        live = self._table.live(ref)
        grace = self._config.default_grace if grace is None else max(0.0, grace)
        async with live.lock:
            if self._table.find(ref) is not record:
                raise NotFound(f"process {ref} was stopped meanwhile")
            if live.restart is not None:
                live.restart.cancel()
                live.restart = None
            live.cancel_lease_timer()
            record.state = State.STOPPING
            self._table.save(record)
            if record.run is not None:
                await self._terminate(record, live, grace)
            self._driver.kill(record.cgroup)
            await self._launcher.remove_cgroup(record.cgroup)
            self._table.forget(record)
            self._store.delete(ref)
            record.state = State.STOPPED
            record.message = message
            self._table.emit(record, EventType.STOPPED, message)
        return record

    def stop_later(self, record: ProcessRecord, live: Live) -> None:
        """Finish a stop that an earlier agent began (it died while stopping)."""
        live.tasks.add(asyncio.get_running_loop().create_task(self._finish_stop(record.ref)))

    async def _finish_stop(self, ref: Ref) -> None:
        with contextlib.suppress(NotFound):
            await self.stop_process(ref)

    async def _terminate(self, record: ProcessRecord, live: Live, grace: float) -> None:
        if grace > 0:
            self._launcher.signal(record, live, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.exited.wait(), grace)
        if record.run is not None:
            self._launcher.signal(record, live, signal.SIGKILL)
            self._driver.kill(record.cgroup)
            try:
                await asyncio.wait_for(live.exited.wait(), KILL_WAIT)
            except TimeoutError:
                log.error("%s did not end %ss after SIGKILL", record.ref, KILL_WAIT)
