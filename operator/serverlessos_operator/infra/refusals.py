"""Objects the models refuse, reported where their owner looks.

An object can reach the operator that the API server accepted but the models
refuse (stored under an older or looser schema, or written by a newer version).
It never enters the operator's books, so it cannot trip any loop over them; it gets
a Warning Event naming the field, and where the operator owns the object's status a
condition saying so (a ProcessMigration is Failed). It is read again at its next
change; fixing it admits it. Each distinct problem is reported once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api.conditions import set_condition, wire
from ..api.meta import Condition, now, object_ref
from ..api.v1alpha1 import MigrationPhase, ProcessPhase
from .events import EventSink
from .kube import StatusWriter

log = logging.getLogger(__name__)

INVALID = "InvalidSpec"


class Kind(enum.StrEnum):
    PROCESS = "ServerlessProcess"
    MIGRATION = "ProcessMigration"
    CLUSTER_CGROUP = "ClusterCgroup"
    NODE = "ServerlessNode"


# The condition each kind's status carries the refusal in (None: events only).
CONDITION = {Kind.PROCESS: "Synced", Kind.CLUSTER_CGROUP: "Enforced"}


def identity(body: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """(namespace, name, uid, generation) of a raw object, whatever else is wrong with it."""
    meta = body.get("metadata") or {}
    return (
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        str(meta.get("uid") or ""),
        int(meta.get("generation") or 0),
    )


class Refusals:
    def __init__(self, kube: StatusWriter, events: EventSink) -> None:
        self.kube = kube
        self.events = events
        self._reported: dict[tuple[Kind, str, str], tuple[str, str]] = {}  # -> (uid, problem)

    def refused(self, kind: Kind) -> dict[tuple[str, str], str]:
        return {(ns, name): p for (k, ns, name), (_, p) in self._reported.items() if k == kind}

    def clear(self, kind: Kind, namespace: str, name: str) -> bool:
        """The object parses now; True if it had been refused."""
        return self._reported.pop((kind, namespace, name), None) is not None

    async def refuse(self, kind: Kind, body: Mapping[str, Any], problem: str) -> None:
        namespace, name, uid, generation = identity(body)
        key = (kind, namespace, name)
        if self._reported.get(key) == (uid, problem):
            return  # reported already (our own status write comes back as a watch event)
        self._reported[key] = (uid, problem)
        log.warning("%s %s/%s refused: %s", kind, namespace, name, problem)
        message = f"the operator cannot use this object: {problem}"
        self.events.post(object_ref(kind, namespace, name, uid), "Warning", INVALID, message)
        try:
            await self._write(
                kind,
                namespace=namespace,
                name=name,
                body=body,
                message=message,
                generation=generation,
            )
        except Exception as exc:
            log.warning("could not report the refusal of %s %s/%s: %s", kind, namespace, name, exc)

    async def _write(
        self,
        kind: Kind,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        message: str,
        generation: int,
    ) -> None:
        status = body.get("status") or {}
        if kind == Kind.MIGRATION:
            if status.get("phase") in (None, "", MigrationPhase.PENDING):  # not one under way
                await self.kube.patch_migration_status(
                    namespace,
                    name,
                    {"phase": MigrationPhase.FAILED, "completedAt": now(), "message": message},
                )
            return
        condition = CONDITION.get(kind)
        if condition is None:
            return
        conditions = set_condition(
            parsed_conditions(status), condition, False, INVALID, message, generation=generation
        )
        patch: dict[str, Any] = {"conditions": wire(conditions)}
        if kind == Kind.PROCESS:
            patch["observedGeneration"] = generation
            if not status.get("phase"):  # never un-run a running process
                patch.update(phase=ProcessPhase.PENDING, reason=INVALID, message=message)
            await self.kube.patch_process_status(namespace, name, patch)
        else:
            await self.kube.patch_cgroup_status(namespace, name, patch)


def parsed_conditions(status: Mapping[str, Any]) -> list[Condition]:
    """A status's conditions that still parse (it may be as odd as the spec)."""
    out = []
    for raw in status.get("conditions") or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return out
