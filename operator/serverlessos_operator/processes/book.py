"""The operator's books on processes: what each ServerlessProcess asks, where it runs,
what it holds in the ledger, and the one lock that orders everything done to it.

Every status write goes through `ProcessBook.patch`, which keeps the books (phase,
conditions, ledger reservations) in step with what was written, and skips writes
that would change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..api.conditions import wire
from ..api.meta import Condition, object_ref
from ..api.v1alpha1 import (
    MigrationRecord,
    ProcessPhase,
    ServerlessProcess,
    ServerlessProcessSpec,
    Usage,
)
from ..infra.kube import StatusWriter
from ..scheduling.constraints import Request, Toleration
from ..scheduling.ledger import Ledger

Key = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class Figures:
    """One process's figures from its node's agent, as of one poll."""

    cores: float  # CPU in use over the agent's last sampling interval
    throttled_seconds: float  # cumulative
    memory_bytes: int
    at: float  # our monotonic clock at the poll


def request_of(spec: ServerlessProcessSpec) -> Request:
    """What placement must find room for, and where it may go."""
    return Request(
        cpu_millis=spec.resources.cpu.milli_value(),
        memory_bytes=spec.resources.memory.value(),
        node_selector=dict(spec.node_selector),
        tolerations=tuple(
            Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            for t in spec.tolerations
        ),
    )


@dataclass
class ProcessInfo:
    namespace: str
    name: str
    uid: str
    spec: ServerlessProcessSpec
    generation: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    node: str | None = None
    phase: ProcessPhase | None = None
    conditions: list[Condition] = field(default_factory=list)
    usage: Usage | None = None
    deleting: bool = False
    written: dict[str, Any] = field(default_factory=dict)  # the last status patched (wire form)
    resize_pending: bool = False  # spec.resources changed and not yet applied on the node
    migrations: list[MigrationRecord] = field(default_factory=list)  # status.migrations
    # An active migration (migration/): its name and its target node. The target's
    # copy is not a stray, and the frozen source is not to be reported.
    migration: str | None = None
    migrating_to: str | None = None
    # What the ledger holds for it: (node, cpu, memory) while it is placed and not over.
    reserved: tuple[str, int, int] | None = None
    stats: Figures | None = None  # its latest figures from its node's agent
    throttled_rate: float = 0.0  # seconds throttled per second, between the last two polls
    reason_shown: str = ""  # the last waiting reason posted as an Event (once each)
    held_cpu: int | None = None  # the CPU limit its agent last reported holding

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def request(self) -> Request:
        return request_of(self.spec)

    @property
    def active(self) -> bool:
        """Neither over nor being deleted."""
        return not (self.phase is not None and self.phase.terminal) and not self.deleting

    @property
    def placed(self) -> bool:
        """Active on a node: it holds that node's resources (and its budget's share)."""
        return self.node is not None and self.active

    @property
    def waiting(self) -> bool:
        """Not confirmed running on a node yet: the operator keeps trying to start it."""
        return self.active and (self.node is None or self.phase is None or self.phase.waiting)

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of the object to post Kubernetes Events about it."""
        return object_ref("ServerlessProcess", self.namespace, self.name, self.uid)

    @classmethod
    def from_object(cls, obj: ServerlessProcess) -> ProcessInfo:
        meta, status = obj.metadata, obj.status
        return cls(
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            spec=obj.spec,
            generation=meta.generation,
            labels=dict(meta.labels),
            node=status.node if status else None,
            phase=status.phase if status else None,
            conditions=list(status.conditions) if status else [],
            usage=status.usage if status else None,
            deleting=bool(meta.deletion_timestamp),
            migrations=list(status.migrations) if status else [],
        )


class ProcessBook:
    def __init__(self, kube: StatusWriter, ledger: Ledger) -> None:
        self.kube = kube
        self.ledger = ledger
        self._processes: dict[Key, ProcessInfo] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self.synced = False  # processes listed: orphans on agents can be told apart

    def get(self, key: Key) -> ProcessInfo | None:
        return self._processes.get(key)

    def __iter__(self) -> Iterator[ProcessInfo]:
        return iter(list(self._processes.values()))

    def __len__(self) -> int:
        return len(self._processes)

    def current(self, info: ProcessInfo) -> bool:
        """Still the object the books hold under its name (not deleted, not replaced)."""
        return self._processes.get(info.key) is info

    def lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def phase_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for info in self._processes.values():
            phase = info.phase or ProcessPhase.PENDING
            counts[phase] = counts.get(phase, 0) + 1
        return counts

    # ----- fed by watches --------------------------------------------------

    def upsert(self, obj: ServerlessProcess) -> ProcessInfo:
        """Merge a watch event in, updating the known object in place (code holding it
        across an await must see the same object). The operator writes the status, so
        its own node, phase and conditions are ahead of any watch event."""
        fresh = ProcessInfo.from_object(obj)
        known = self._processes.get(fresh.key)
        if known is None or known.uid != fresh.uid:
            if known is not None:
                self.account(known, gone=True)
            self._processes[fresh.key] = fresh
            self.account(fresh)
            return fresh
        if fresh.generation > known.generation:
            if fresh.spec.resources != known.spec.resources:
                known.resize_pending = known.node is not None or fresh.node is not None
            known.spec = fresh.spec
            known.generation = fresh.generation
        known.labels = fresh.labels  # labels change without a new generation
        known.deleting = known.deleting or fresh.deleting  # sticky
        if known.node is None and not known.written:
            known.node = fresh.node  # after a restart the status is all we know
        known.phase = known.phase or fresh.phase
        if not known.conditions:
            known.conditions = fresh.conditions
        if not known.migrations:
            known.migrations = fresh.migrations
        self.account(known)
        return known

    def forget(self, key: Key, uid: str) -> None:
        known = self._processes.get(key)
        if known is not None and known.uid == uid:
            self.account(known, gone=True)
            del self._processes[key]
            self._locks.pop(key, None)

    # ----- what it holds ---------------------------------------------------

    def account(self, info: ProcessInfo, gone: bool = False) -> None:
        """Keep the ledger's reservations in step with where the process is (called
        wherever its node or phase may change: each such change is patched or watched)."""
        held = None
        if not gone and info.node and info.placed:
            request = info.request
            held = (info.node, request.cpu_millis, request.memory_bytes)
        if held == info.reserved:
            return
        if info.reserved is not None:
            self.ledger.release(*info.reserved)
        if held is not None:
            # Only a new placement is load the node's reports cannot show yet; one
            # already running (e.g. listed after an operator restart) is in them.
            new = info.phase is None or info.phase.waiting
            self.ledger.reserve(*held, now=time.monotonic(), expect=new)
        info.reserved = held

    async def patch(self, info: ProcessInfo, status: dict[str, Any]) -> bool:
        """Merge-patch the process's status (camelCase keys; `conditions` as Condition
        models); False if the object is gone."""
        if "conditions" in status:
            info.conditions = status["conditions"]
            status = {**status, "conditions": wire(status["conditions"])}
        if "phase" in status:
            info.phase = ProcessPhase(status["phase"]) if status["phase"] else None
        self.account(info)
        if all(info.written.get(k) == v for k, v in status.items()):
            return True  # e.g. the agent's Started event after our own Running patch
        done = await self.kube.patch_process_status(info.namespace, info.name, status)
        info.written.update(status)  # only once it is written
        return done

    # ----- migrations (migration/ claims and releases a process) ------------

    def claim_migration(self, info: ProcessInfo, migration: str, target: str | None) -> None:
        info.migration = migration
        info.migrating_to = target

    def release_migration(self, info: ProcessInfo, migration: str) -> None:
        if info.migration == migration:
            info.migration = None
            info.migrating_to = None
