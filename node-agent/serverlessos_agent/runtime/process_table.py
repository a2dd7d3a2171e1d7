"""The processes this agent keeps: their records, the runtime companions of each,
and the two ways a change leaves the agent (the record store and the event journal).

Concurrency: one asyncio loop. Exit handling is synchronous (no await), so it
never interleaves with itself; a per-process lock (Live.lock) serialises the
operations that await (start, restart, stop, freeze, resume).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from ..errors import NotFound
from ..records import ProcessRecord, Ref, State
from ..storage.event_journal import EventJournal, EventType
from ..storage.record_store import RecordStore


@dataclass
class Live:
    """Runtime-only companions of a record (never persisted)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    shim_fd: int | None = None  # readable when the shim (or, adopted alone, the process) ends
    pid_fd: int | None = None  # for signalling the process without PID-reuse races
    restart: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lease_timer: asyncio.TimerHandle | None = None

    def close_fds(self) -> None:
        if self.shim_fd is not None:
            asyncio.get_running_loop().remove_reader(self.shim_fd)
            os.close(self.shim_fd)
            self.shim_fd = None
        if self.pid_fd is not None:
            os.close(self.pid_fd)
            self.pid_fd = None

    def cancel_lease_timer(self) -> None:
        if self.lease_timer is not None:
            self.lease_timer.cancel()
            self.lease_timer = None


class ProcessTable:
    def __init__(self, store: RecordStore, journal: EventJournal) -> None:
        self._store = store
        self._journal = journal
        self._records: dict[Ref, ProcessRecord] = {}
        self._live: dict[Ref, Live] = {}

    # ----- queries -------------------------------------------------------

    def get(self, ref: Ref) -> ProcessRecord:
        try:
            return self._records[ref]
        except KeyError:
            raise NotFound(f"no process {ref.name!r} in namespace {ref.namespace!r}") from None

    def find(self, ref: Ref) -> ProcessRecord | None:
        return self._records.get(ref)

    def entry(self, ref: Ref) -> tuple[ProcessRecord, Live] | None:
        """The record and its companions, or None once it is forgotten (for callbacks
        that may fire after a stop)."""
        record, live = self._records.get(ref), self._live.get(ref)
        if record is None or live is None:
            return None
        return record, live

    def live(self, ref: Ref) -> Live:
        """The companions of a record known to be here (get() it first)."""
        return self._live[ref]

    def __contains__(self, ref: Ref) -> bool:
        return ref in self._records

    def __len__(self) -> int:
        return len(self._records)

    def list(self, namespace: str = "") -> list[ProcessRecord]:
        return [
            r
            for ref, r in sorted(
                self._records.items(), key=lambda kv: (kv[0].namespace, kv[0].name)
            )
            if not namespace or ref.namespace == namespace
        ]

    def finished(self, record: ProcessRecord) -> bool:
        """Whether nothing more will run under this record (so its log is complete):
        it was stopped (gone, or replaced by a new process of that name), or it
        ended for good (Succeeded, Failed)."""
        current = self._records.get(record.ref)
        return current is not record or current.state in (State.SUCCEEDED, State.FAILED)

    def groups(self) -> dict[Ref, str]:
        """Cgroups of processes that currently have one (for stats)."""
        return {ref: r.cgroup for ref, r in self._records.items() if r.state != State.PENDING}

    # ----- changes -------------------------------------------------------

    def add(self, record: ProcessRecord) -> Live:
        """Keep a record (new, or re-adopted from the store) with fresh companions."""
        live = Live()
        self._records[record.ref] = record
        self._live[record.ref] = live
        return live

    def forget(self, record: ProcessRecord) -> None:
        live = self._live.pop(record.ref, None)
        if live is not None:
            live.close_fds()
            live.cancel_lease_timer()
        self._records.pop(record.ref, None)

    def save(self, record: ProcessRecord) -> None:
        self._store.save(record)

    def emit(self, record: ProcessRecord, kind: EventType, message: str = "") -> None:
        self._journal.append(kind, record.redacted().to_json(), message)

    def close(self) -> None:
        """Let go of everything without touching the processes: they keep running."""
        for live in self._live.values():
            if live.restart is not None:
                live.restart.cancel()
            for task in live.tasks:
                task.cancel()
            live.cancel_lease_timer()
            live.close_fds()
