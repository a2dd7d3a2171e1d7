"""One ProcessMigration in the operator's hands, and what it writes.

`Migration` is the typed object plus the status as written so far (the phase says
what may have happened: decide, record, act). `MigrationStatus` writes the
migration's own status and, into its process's status, the Migrating condition,
the switch to the target, and the migration history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.conditions import set_condition
from ..api.meta import now, object_ref
from ..api.v1alpha1 import (
    MigrationMode,
    MigrationPhase,
    MigrationRecord,
    ProcessMigration,
)
from ..infra.events import EventSink
from ..infra.kube import StatusWriter
from ..processes.agent_view import status_from_agent
from ..processes.book import ProcessBook, ProcessInfo
from .rules import history

# What finished: (mode, phase, downtime seconds or None), for metrics.
OnFinished = Callable[[str, str, float | None], None]


@dataclass
class Migration:
    namespace: str
    name: str
    uid: str
    process: str
    requested_target: str
    requested_mode: MigrationMode
    phase: MigrationPhase | None
    status: dict[str, Any]  # as written so far (wire form)

    @classmethod
    def from_object(cls, obj: ProcessMigration) -> Migration:
        status = obj.status.to_wire() if obj.status else {}
        return cls(
            namespace=obj.metadata.namespace,
            name=obj.metadata.name,
            uid=obj.metadata.uid,
            process=obj.spec.process,
            requested_target=obj.spec.target_node,
            requested_mode=obj.spec.mode,
            phase=obj.status.phase if obj.status else None,
            status=status,
        )

    @property
    def ref(self) -> dict[str, Any]:
        return object_ref("ProcessMigration", self.namespace, self.name, self.uid)

    @property
    def source(self) -> str:
        return str(self.status.get("sourceNode", ""))

    @property
    def target(self) -> str:
        return str(self.status.get("targetNode", ""))

    @property
    def process_ref(self) -> pb.ProcessRef:
        return pb.ProcessRef(namespace=self.namespace, name=self.process)

    @property
    def process_uid(self) -> str:
        return str(self.status.get("processUid", ""))


class MigrationStatus:
    def __init__(
        self,
        kube: StatusWriter,
        book: ProcessBook,
        events: EventSink,
        on_finished: OnFinished = lambda mode, phase, downtime: None,
    ) -> None:
        self.kube = kube
        self.book = book
        self.events = events
        self.on_finished = on_finished

    def process(self, m: Migration) -> ProcessInfo | None:
        return self.book.get((m.namespace, m.process))

    async def write(self, m: Migration, **fields: Any) -> None:
        """The migration's status (camelCase fields); a terminal phase is counted."""
        m.status.update(fields)
        if "phase" in fields:
            m.phase = MigrationPhase(fields["phase"])
            if m.phase.terminal:
                self.on_finished(
                    str(m.status.get("mode") or "-"), str(m.phase), m.status.get("downtimeSeconds")
                )
        await self.kube.patch_migration_status(m.namespace, m.name, fields)

    async def fail(self, m: Migration, reason: str) -> None:
        await self.write(m, phase=MigrationPhase.FAILED, completedAt=now(), message=reason)
        self.events.post(m.ref, "Warning", "Failed", reason)
        info = self.process(m)
        if info is not None and info.migration in (None, m.name):
            await self.record_history(m)

    # ----- into the process's status ---------------------------------------

    async def set_migrating(self, info: ProcessInfo, on: bool, reason: str, message: str) -> None:
        """The Migrating condition: True while a migration may have it frozen."""
        async with self.book.lock(info.key):
            await self.book.patch(
                info,
                {"conditions": set_condition(info.conditions, "Migrating", on, reason, message)},
            )

    async def move_to(self, info: ProcessInfo, node: str, process: pb.Process) -> None:
        """The target confirmed a running restore: the process lives there now."""
        async with self.book.lock(info.key):
            info.node = node
            info.migrating_to = None
            status = status_from_agent(process, node, info.conditions)
            status["conditions"] = set_condition(
                status["conditions"], "Migrating", False, "Migrated", f"now on {node}"
            )
            await self.book.patch(info, status)
        self.events.post(info.ref, "Normal", "Migrated", f"running on {node}, pid {process.pid}")

    async def record_history(self, m: Migration) -> None:
        info = self.process(m)
        if info is None:
            return
        s = m.status
        entry = MigrationRecord.model_validate(
            {
                "name": m.name,
                "mode": s.get("mode", ""),
                "phase": s.get("phase", ""),
                "sourceNode": s.get("sourceNode", ""),
                "targetNode": s.get("targetNode", ""),
                "startedAt": s.get("startedAt"),
                "completedAt": s.get("completedAt"),
                "downtime": s.get("downtime", ""),
                "transferredBytes": s.get("transferredBytes", 0),
                "message": s.get("message", "")[:1024],
            }
        )
        async with self.book.lock(info.key):
            info.migrations = history(info.migrations, entry)
            await self.kube.patch_process_status(
                info.namespace, info.name, {"migrations": [r.to_wire() for r in info.migrations]}
            )
