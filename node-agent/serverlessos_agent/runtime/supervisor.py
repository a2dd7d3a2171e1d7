"""The supervisor: the agent's model of its processes and the rules that move them.

It owns the records, starts runs through the spawner, turns exits into
terminations and restarts (with back-off), stops processes, changes their
limits, and on start re-adopts what a previous agent left running. It knows
nothing of gRPC; the servicer translates.

Concurrency: one asyncio loop. Exit handling is synchronous (no await), so it
never interleaves with itself; a per-process lock serialises the operations
that await (start, restart, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serverlessos.files import read_json
from serverlessos.quantity import format_bytes, format_cpu

from ..cgroup import CgroupDriver
from ..errors import AlreadyExists, FailedPrecondition, NotFound
from ..storage.event_journal import EventJournal, EventType
from ..storage.log_files import rotate_if_needed
from ..storage.record_store import RecordStore
from .procfs import open_pidfd
from .records import (
    Lease,
    ProcessRecord,
    ProcessSpec,
    Reason,
    Ref,
    Resources,
    Run,
    State,
    Termination,
)
from .restart_policy import Backoff, should_restart
from .spawner import Spawner, SpawnRequest
from .validation import NodeCapacity, check_lease, check_resources, check_spec

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERMINAL = (State.SUCCEEDED, State.FAILED)
KILL_WAIT = 10.0


@dataclass(frozen=True)
class SupervisorConfig:
    state_dir: Path
    default_grace: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    log_max_bytes: int = 10 * 2**20
    log_keep: int = 1


@dataclass
class _Live:
    """Runtime-only companions of a record (never persisted)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    shim_fd: int | None = None  # readable when the shim (or, adopted alone, the process) ends
    pid_fd: int | None = None  # for signalling the process without PID-reuse races
    restart: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lease_timer: asyncio.TimerHandle | None = None


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig,
        driver: CgroupDriver,
        *,
        spawner: Spawner,
        events: EventJournal,
        capacity: NodeCapacity,
        privilege_problems: list[str] | None = None,
    ) -> None:
        self.config = config
        self.driver = driver
        self.spawner = spawner
        self.events = events
        self.capacity = capacity
        self.privilege_problems = privilege_problems or []
        self.store = RecordStore(config.state_dir)
        self.records: dict[Ref, ProcessRecord] = {}
        self._live: dict[Ref, _Live] = {}
        self.lease_expiries = 0  # leases that ran out unrenewed, since the agent started

    # ----- queries -------------------------------------------------------

    def get(self, ref: Ref) -> ProcessRecord:
        try:
            return self.records[ref]
        except KeyError:
            raise NotFound(f"no process {ref.name!r} in namespace {ref.namespace!r}") from None

    def list(self, namespace: str = "") -> list[ProcessRecord]:
        return [
            r
            for ref, r in sorted(self.records.items(), key=lambda kv: (kv[0].namespace, kv[0].name))
            if not namespace or ref.namespace == namespace
        ]

    def groups(self) -> dict[Ref, str]:
        """Cgroups of processes that currently have one (for stats)."""
        return {ref: r.cgroup for ref, r in self.records.items() if r.state != State.PENDING}

    # ----- start ---------------------------------------------------------

    async def start_process(self, spec: ProcessSpec, lease: Lease | None = None) -> ProcessRecord:
        return await self._create(spec, uid=uuid.uuid4().hex, lease=lease)

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
        check_spec(spec, self.capacity)
        if lease is not None:
            check_lease(lease, self.capacity)
        if self.privilege_problems:
            raise FailedPrecondition("; ".join(self.privilege_problems))
        if spec.ref in self.records:
            raise AlreadyExists(
                f"process {spec.name!r} already exists in namespace {spec.namespace!r} "
                f"(state {self.records[spec.ref].state}); stop it first"
            )
        directory = self.store.dir(spec.ref)
        record = ProcessRecord(
            uid=uid,
            spec=spec,
            state=State.PENDING,
            created_at=time.time(),
            cgroup=self.driver.group(spec.ref),
            log_path=str(directory / "logs" / "output.log"),
            workdir=str(directory / "work"),
            restarts=restarts,
            migration_id=migration_id,
            lease=lease,
        )
        live = _Live()
        # Claim the name before the first await, so a concurrent duplicate is refused.
        self.records[spec.ref] = record
        self._live[spec.ref] = live
        async with live.lock:
            try:
                self.store.prepare(spec.ref)
                self.store.save(record)
                self._arm_lease(record, live)
                await self._launch(record, live, restore)
            except Exception:
                # Nothing runs (a failed exec is not an exception): leave no trace.
                self._forget(record)
                self.store.delete(spec.ref)
                with contextlib.suppress(Exception):
                    self.driver.kill(record.cgroup)
                    await self._remove_cgroup(record.cgroup)
                raise
        return record

    def _prepare_cgroup(self, record: ProcessRecord) -> None:
        # Idempotent, and done before every run: after a host reboot the records
        # survive but the (in-memory) cgroup hierarchy does not.
        self.driver.create(record.cgroup)
        self.driver.set_limits(record.cgroup, record.spec.resources)

    async def _launch(
        self, record: ProcessRecord, live: _Live, restore: dict[str, Any] | None = None
    ) -> None:
        spec = record.spec
        self._prepare_cgroup(record)
        run_dir = self.store.run_dir(spec.ref)
        for stale in ("shim.json", "exit.json"):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / stale).unlink()
        try:
            oom_before = self.driver.stats(record.cgroup).oom_kills
        except (OSError, ValueError):
            oom_before = 0
        request = SpawnRequest(
            argv=list(spec.argv),
            env={"PATH": DEFAULT_PATH, **spec.env},
            cwd=spec.working_dir or record.workdir,
            log=record.log_path,
            run_dir=str(run_dir),
            procs=[str(p) for p in self.driver.procs_files(record.cgroup)],
            shim_procs=[str(p) for p in self.driver.procs_files(self.driver.shim_group)],
            attempt=record.attempt,
            restore=restore,
        )
        live.exited.clear()
        result = await self.spawner.spawn(request)
        if not result.ok and restore is not None:
            raise FailedPrecondition(result.error)  # the caller rolls back; nothing ran
        if not result.ok:
            now = time.time()
            termination = Termination(
                reason=Reason.START_ERROR,
                exit_code=127,
                message=result.error,
                started_at=now,
                finished_at=now,
            )
            self._ended(record, live, termination, EventType.START_FAILED)
            return
        record.run = Run(
            attempt=record.attempt,
            shim_pid=result.shim_pid,
            shim_start=result.shim_start,
            pid=result.pid,
            pid_start=result.pid_start,
            started_at=result.started_at,
            oom_kills_before=oom_before,
        )
        record.state = State.RUNNING
        record.last_started_at = result.started_at
        record.message = ""
        record.next_restart_at = 0.0
        self.store.save(record)
        # Announce the start before watching: a run that already ended is reported
        # by _watch at once, and its exit must come after its start.
        if restore is not None:
            self._emit(record, EventType.RESTORED, f"restored from migration {record.migration_id}")
        else:
            self._emit(record, EventType.STARTED if record.attempt == 0 else EventType.RESTARTED)
        self._watch(record, live, result.shim_pid, result.shim_start)

    def _watch(self, record: ProcessRecord, live: _Live, watch_pid: int, watch_start: int) -> None:
        """Learn of the run's end through a pidfd on its shim (any process can poll one)."""
        assert record.run is not None
        live.pid_fd = open_pidfd(record.run.pid, record.run.pid_start)
        fd = open_pidfd(watch_pid, watch_start)
        if fd is None:  # ended between spawn and now
            self._run_ended(record.ref)
            return
        live.shim_fd = fd
        asyncio.get_running_loop().add_reader(fd, self._run_ended, record.ref)

    # ----- exits ---------------------------------------------------------

    def _run_ended(self, ref: Ref) -> None:
        record, live = self.records.get(ref), self._live.get(ref)
        if record is None or live is None or record.run is None:
            return
        termination = self._termination(record, record.run, observed_after_restart=False)
        kind = EventType.OOM_KILLED if termination.reason == Reason.OOM_KILLED else EventType.EXITED
        self._ended(record, live, termination, kind)

    def _termination(
        self, record: ProcessRecord, run: Run, *, observed_after_restart: bool
    ) -> Termination:
        exit_info = read_json(self.store.run_dir(record.ref) / "exit.json")
        if not exit_info or exit_info.get("attempt") != run.attempt:
            return Termination(
                reason=Reason.UNKNOWN,
                exit_code=-1,
                message="the process ended but its exit status was lost (its shim was killed)",
                started_at=run.started_at,
                finished_at=time.time(),
                observed_after_agent_restart=observed_after_restart,
            )
        code, sig = int(exit_info["exit_code"]), int(exit_info["signal"])
        try:
            oom_now = self.driver.stats(record.cgroup).oom_kills
        except (OSError, ValueError):
            oom_now = run.oom_kills_before
        if oom_now > run.oom_kills_before and (sig == signal.SIGKILL or code != 0):
            limit = record.spec.resources.memory_bytes
            reason = Reason.OOM_KILLED
            message = (
                f"killed by the kernel's OOM killer: the process needed more than its memory "
                f"limit of {format_bytes(limit)}"
                if limit
                else "killed by the kernel's OOM killer"
            )
        elif sig:
            reason = Reason.SIGNALED
            message = f"killed by signal {sig} ({signal.Signals(sig).name})"
        elif code == 0:
            reason, message = Reason.COMPLETED, "exited with code 0"
        else:
            reason, message = Reason.ERROR, f"exited with code {code}"
        if observed_after_restart:
            message += " (while the agent was not running)"
        return Termination(
            reason=reason,
            exit_code=code,
            signal=sig,
            message=message,
            started_at=run.started_at,
            finished_at=float(exit_info["finished_at"]),
            observed_after_agent_restart=observed_after_restart,
        )

    def _ended(
        self, record: ProcessRecord, live: _Live, termination: Termination, kind: EventType
    ) -> None:
        self._close_fds(live)
        record.run = None
        record.last_termination = termination
        live.exited.set()
        if record.state == State.STOPPING:
            self.store.save(record)
            return  # stop_process takes it from here
        if should_restart(record.spec.restart_policy, termination):
            delay, record.backoff_step = self.config.backoff.after_exit(
                record.backoff_step, termination.finished_at - termination.started_at
            )
            record.state = State.BACKOFF
            record.next_restart_at = time.time() + delay
            record.message = f"restarting in {delay:g}s after: {termination.message}"
            live.restart = asyncio.get_running_loop().create_task(
                self._restart_later(record.ref, delay)
            )
        else:
            record.state = (
                State.SUCCEEDED if termination.reason == Reason.COMPLETED else State.FAILED
            )
            record.message = termination.message
        self.store.save(record)
        self._emit(record, kind, termination.message)

    async def _restart_later(self, ref: Ref, delay: float, *, is_restart: bool = True) -> None:
        await asyncio.sleep(delay)
        record, live = self.records.get(ref), self._live.get(ref)
        if record is None or live is None:
            return
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
                self.store.save(record)
            try:
                await self._launch(record, live)
            except Exception as exc:  # e.g. the fork server died: keep trying, say why
                log.exception("restart of %s failed", ref)
                now = time.time()
                self._ended(
                    record,
                    live,
                    Termination(Reason.START_ERROR, 127, 0, str(exc), now, now),
                    EventType.START_FAILED,
                )

    # ----- stop ----------------------------------------------------------

    async def stop_process(
        self, ref: Ref, grace: float | None = None, message: str = "stopped"
    ) -> ProcessRecord:
        record = self.get(ref)
        live = self._live[ref]
        grace = self.config.default_grace if grace is None else max(0.0, grace)
        async with live.lock:
            if self.records.get(ref) is not record:
                raise NotFound(f"process {ref} was stopped meanwhile")
            if live.restart is not None:
                live.restart.cancel()
                live.restart = None
            self._cancel_lease(live)
            record.state = State.STOPPING
            self.store.save(record)
            if record.run is not None:
                await self._terminate(record, live, grace)
            self.driver.kill(record.cgroup)
            await self._remove_cgroup(record.cgroup)
            self._forget(record)
            self.store.delete(ref)
            record.state = State.STOPPED
            record.message = message
            self._emit(record, EventType.STOPPED, message)
        return record

    async def _terminate(self, record: ProcessRecord, live: _Live, grace: float) -> None:
        if grace > 0:
            self._signal(record, live, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.exited.wait(), grace)
        if record.run is not None:
            self._signal(record, live, signal.SIGKILL)
            self.driver.kill(record.cgroup)
            try:
                await asyncio.wait_for(live.exited.wait(), KILL_WAIT)
            except TimeoutError:
                log.error("%s did not end %ss after SIGKILL", record.ref, KILL_WAIT)

    def _signal(self, record: ProcessRecord, live: _Live, sig: signal.Signals) -> None:
        if live.pid_fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(live.pid_fd, sig)
        elif sig == signal.SIGKILL:
            self.driver.kill(record.cgroup)

    async def _remove_cgroup(self, group: str) -> None:
        for _ in range(50):  # dying processes leave the cgroup within milliseconds
            try:
                self.driver.remove(group)
                return
            except FailedPrecondition:
                self.driver.kill(group)
                await asyncio.sleep(0.02)
        self.driver.remove(group)

    def _forget(self, record: ProcessRecord) -> None:
        live = self._live.pop(record.ref, None)
        if live is not None:
            self._close_fds(live)
            self._cancel_lease(live)
        self.records.pop(record.ref, None)

    # ----- update --------------------------------------------------------

    async def update_resources(
        self, ref: Ref, resources: Resources, lease: Lease | None = None
    ) -> ProcessRecord:
        """Set the limits; with a lease, only until it runs out unrenewed. Without a
        lease this is permanent and always written, events included (as before
        leases). A renewal that changes nothing only moves the expiry: the operator
        renews every process every few seconds, so it must cost no write and no event."""
        record = self.get(ref)
        live = self._live[ref]
        check_resources(resources, self.capacity)
        if lease is not None:
            check_lease(lease, self.capacity)
        changed = lease is None or resources != record.spec.resources or lease != record.lease
        if changed:
            used = self._memory_in_use(record)
            if resources.memory_bytes and used is not None and resources.memory_bytes < used:
                raise FailedPrecondition(
                    f"memory limit {format_bytes(resources.memory_bytes)} is below the "
                    f"{format_bytes(used)} the process uses now; lowering it would OOM-kill it"
                )
            self._apply(record, resources)
        had_lease = record.lease is not None
        record.lease = lease
        self._arm_lease(record, live)
        if changed:
            self.store.save(record)
            if lease is not None:
                message = f"leased for {lease.seconds:g}s, then {_fallback_text(lease.fallback)}"
            else:
                message = "no longer leased" if had_lease else ""
            self._emit(record, EventType.RESOURCES_UPDATED, message)
        return record

    def _apply(self, record: ProcessRecord, resources: Resources) -> None:
        self.driver.set_limits(record.cgroup, resources)
        record.spec = dataclasses.replace(record.spec, resources=resources)

    def _memory_in_use(self, record: ProcessRecord) -> int | None:
        """What the current run uses now; None if nothing runs or it cannot be read."""
        if record.run is None:
            return None
        try:
            return self.driver.stats(record.cgroup).memory_current
        except (OSError, ValueError):
            return None

    # ----- leases --------------------------------------------------------

    def _arm_lease(self, record: ProcessRecord, live: _Live) -> None:
        """(Re)start the record's lease clock, or stop it if it has no lease."""
        self._cancel_lease(live)
        if record.lease is None:
            record.lease_expires_at = 0.0
            return
        record.lease_expires_at = time.time() + record.lease.seconds
        live.lease_timer = asyncio.get_running_loop().call_later(
            record.lease.seconds, self._lease_expired, record.ref
        )

    def _cancel_lease(self, live: _Live) -> None:
        if live.lease_timer is not None:
            live.lease_timer.cancel()
            live.lease_timer = None

    def _lease_expired(self, ref: Ref) -> None:
        """Not renewed in time: fall back to the lease's safe values, never to an
        OOM kill (a memory fallback below current use keeps the memory limit)."""
        record, live = self.records.get(ref), self._live.get(ref)
        if record is None or live is None or record.lease is None:
            return
        live.lease_timer = None
        lease, current = record.lease, record.spec.resources
        cpu = lease.fallback.cpu_millis or current.cpu_millis
        memory = lease.fallback.memory_bytes or current.memory_bytes
        notes = []
        if lease.fallback.cpu_millis:
            notes.append(f"cpu fallback {format_cpu(cpu)}")
        if lease.fallback.memory_bytes:
            used = self._memory_in_use(record)
            if used is not None and memory < used:
                notes.append(
                    f"memory fallback {format_bytes(memory)} not applied (the process uses "
                    f"{format_bytes(used)}), kept at {_limit_text(current.memory_bytes)}"
                )
                memory = current.memory_bytes
            else:
                notes.append(f"memory fallback {format_bytes(memory)}")
        message = f"lease expired after {lease.seconds:g}s without renewal: " + (
            ", ".join(notes) or "limits kept (the lease had no fallback)"
        )
        try:
            self._apply(record, Resources(cpu, memory))
        except FailedPrecondition as exc:
            # The kernel may fail to reclaim down to a new memory limit: keep memory.
            try:
                self._apply(record, Resources(cpu, current.memory_bytes))
                message += f"; memory kept at {_limit_text(current.memory_bytes)}: {exc}"
            except FailedPrecondition as again:
                message += f"; applying the fallback failed: {again}"
        record.lease = None
        record.lease_expires_at = 0.0
        self.lease_expiries += 1
        self.store.save(record)
        log.warning("%s: %s", ref, message)
        self._emit(record, EventType.RESOURCES_UPDATED, message)

    # ----- adoption after an agent restart -------------------------------

    async def recover(self) -> None:
        """Re-adopt what the previous agent left: running processes keep running
        and are watched again; those that ended meanwhile are reported."""
        for record in self.store.load_all():
            live = _Live()
            self.records[record.ref] = record
            self._live[record.ref] = live
            # Time spent down is not counted against a lease: its clock starts again.
            self._arm_lease(record, live)
            try:
                self._recover_one(record, live)
            except Exception:
                log.exception("could not re-adopt %s", record.ref)

    def _recover_one(self, record: ProcessRecord, live: _Live) -> None:
        if record.state == State.BACKOFF:
            delay = max(0.0, record.next_restart_at - time.time())
            live.restart = asyncio.get_running_loop().create_task(
                self._restart_later(record.ref, delay)
            )
            return
        if record.state not in (State.RUNNING, State.PENDING, State.STOPPING, State.FROZEN):
            return
        run = record.run or self._run_from_shim(record)
        if run is None and record.state == State.STOPPING:
            # Stopping and nothing ran: finish the stop, do not start it again.
            task = asyncio.get_running_loop().create_task(self._finish_stop(record.ref))
            live.tasks.add(task)
            return
        if run is None:
            # The agent died before this run started: start it now, as the same attempt.
            self.driver.kill(record.cgroup)
            record.state = State.PENDING
            live.restart = asyncio.get_running_loop().create_task(
                self._restart_later(record.ref, 0.0, is_restart=False)
            )
            return
        record.run = run
        shim_fd = open_pidfd(run.shim_pid, run.shim_start)
        if shim_fd is not None:
            os.close(shim_fd)
            log.info("re-adopted %s (pid %d)", record.ref, run.pid)
            if record.state == State.PENDING:
                record.state = State.RUNNING
                self.store.save(record)
            self._watch(record, live, run.shim_pid, run.shim_start)
        elif (child_fd := open_pidfd(run.pid, run.pid_start)) is not None:
            os.close(child_fd)
            # The shim is gone but the process lives: watch the process itself;
            # its exit status will be unknown.
            log.warning("%s outlived its shim; its exit status will be lost", record.ref)
            self._watch(record, live, run.pid, run.pid_start)
        else:
            termination = self._termination(record, run, observed_after_restart=True)
            kind = (
                EventType.OOM_KILLED
                if termination.reason == Reason.OOM_KILLED
                else EventType.EXITED
            )
            self._ended(record, live, termination, kind)
        if record.state == State.STOPPING:
            task = asyncio.get_running_loop().create_task(self._finish_stop(record.ref))
            live.tasks.add(task)

    async def _finish_stop(self, ref: Ref) -> None:
        with contextlib.suppress(NotFound):
            await self.stop_process(ref)

    def _run_from_shim(self, record: ProcessRecord) -> Run | None:
        info = read_json(self.store.run_dir(record.ref) / "shim.json")
        if not info or info.get("attempt") != record.attempt:
            return None
        return Run(
            attempt=record.attempt,
            shim_pid=info["shim_pid"],
            shim_start=info["shim_start"],
            pid=info["pid"],
            pid_start=info["pid_start"],
            started_at=info["started_at"],
        )

    # ----- live migration (see migration.py) -----------------------------

    async def freeze(self, ref: Ref, migration_id: str) -> ProcessRecord:
        """Mark a running process frozen for a migration (CRIU freezes it next)."""
        record = self.get(ref)
        live = self._live[ref]
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
            self.store.save(record)
            self._emit(record, EventType.FROZEN, record.message)
        return record

    async def resume(self, ref: Ref, migration_id: str, why: str) -> bool:
        """Roll a migration back on the source: the frozen process runs on. False if
        it was not frozen for that migration."""
        record = self.records.get(ref)
        live = self._live.get(ref)
        if record is None or live is None:
            return False
        async with live.lock:
            if record.state != State.FROZEN or record.migration_id != migration_id:
                return False
            # Thaw the cgroup (migration.py freezes it), then SIGCONT: CRIU leaves the
            # tree stopped.
            with contextlib.suppress(FailedPrecondition):
                self.driver.freeze(record.cgroup, False)
            for pid in self.driver.pids(record.cgroup):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            record.state = State.RUNNING if record.run is not None else record.state
            record.migration_id = ""
            record.message = f"resumed: {why}"
            self.store.save(record)
            self._emit(record, EventType.RESUMED, record.message)
        return True

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

    # ----- housekeeping --------------------------------------------------

    def rotate_logs(self) -> None:
        for record in list(self.records.values()):
            rotate_if_needed(Path(record.log_path), self.config.log_max_bytes, self.config.log_keep)

    def _emit(self, record: ProcessRecord, kind: EventType, message: str = "") -> None:
        self.events.append(kind, record.to_json(), message)

    def _close_fds(self, live: _Live) -> None:
        if live.shim_fd is not None:
            asyncio.get_running_loop().remove_reader(live.shim_fd)
            os.close(live.shim_fd)
            live.shim_fd = None
        if live.pid_fd is not None:
            os.close(live.pid_fd)
            live.pid_fd = None

    async def close(self) -> None:
        """Let go of everything without touching the processes: they keep running."""
        for live in self._live.values():
            if live.restart is not None:
                live.restart.cancel()
            for task in live.tasks:
                task.cancel()
            self._cancel_lease(live)
            self._close_fds(live)


def _limit_text(value: int) -> str:
    return format_bytes(value) if value else "unlimited"


def _fallback_text(fallback: Resources) -> str:
    parts = [f"cpu {format_cpu(fallback.cpu_millis)}"] if fallback.cpu_millis else []
    if fallback.memory_bytes:
        parts.append(f"memory {format_bytes(fallback.memory_bytes)}")
    return "fallback " + ", ".join(parts) if parts else "no fallback (limits kept)"
