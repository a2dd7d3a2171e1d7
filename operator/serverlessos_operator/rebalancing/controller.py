"""Drives the rebalancing policy (policy.py) against the live cluster.

Each interval: offer the processes that may move (policy Auto, running, not
migrating, on a node whose CRIU works), count the migrations in flight per
node, step the policy, and carry out its moves by creating ProcessMigrations
(the migration controller does the rest, with all its safety). Every decision and
its reason becomes an Event on the process and a metric; a hot node with nothing
to move is reported once per hot spell, not every interval. A move that cannot be
created is reported on its process, which is then left out (backed off) for a while.
"""

from __future__ import annotations

import datetime
import functools
import logging
import time
from collections.abc import Callable

from ..api.meta import API_VERSION
from ..api.v1alpha1 import MigrationMode, MigrationPolicy, ProcessPhase
from ..infra.events import EventSink
from ..infra.isolation import Failure, Isolation
from ..infra.kube import StatusWriter
from ..nodes.book import NodeBook
from ..processes.book import Key, ProcessBook, ProcessInfo
from .policy import Movable, Rebalancer

log = logging.getLogger(__name__)

OnNote = Callable[[str], None]  # outcome, for metrics
INITIATOR = "serverlessos.io/initiator"


def _seconds_ago(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (datetime.datetime.now(datetime.UTC) - when).total_seconds())


class RebalanceController:
    def __init__(
        self,
        book: ProcessBook,
        nodes: NodeBook,
        rebalancer: Rebalancer,
        kube: StatusWriter,
        events: EventSink,
        *,
        on_note: OnNote = lambda outcome: None,
        isolation: Isolation[Key] | None = None,
    ) -> None:
        self.book = book
        self.nodes = nodes
        self.rebalancer = rebalancer
        self.kube = kube
        self.events = events
        self.on_note = on_note
        self.isolation: Isolation[Key] = isolation or Isolation()
        self._reported: dict[str, str] = {}  # node -> last outcome reported this hot spell

    def movable(self, now: float) -> list[Movable]:
        out = []
        for info in self.book:
            if info.spec.migration.policy != MigrationPolicy.AUTO:
                continue
            node = self.nodes.get(info.node)
            if node is None or not node.criu.usable or info.phase != ProcessPhase.RUNNING:
                continue
            if info.migration is not None or info.deleting or info.stats is None:
                continue
            if not self.isolation.due(info.key):
                continue  # its last move could not be created: backing off
            self._remember_history(info, now)
            out.append(
                Movable(
                    key=info.key,
                    node=node.name,
                    request=info.request,
                    cpu_millis=info.stats.cores * 1000,
                    memory_bytes=info.stats.memory_bytes,
                )
            )
        return out

    def _remember_history(self, info: ProcessInfo, now: float) -> None:
        """Cooldowns survive an operator restart: the process's status keeps its moves."""
        if info.migrations:
            last = info.migrations[-1]
            ago = _seconds_ago(last.completed_at or last.started_at)
            if ago is not None:
                self.rebalancer.remember(info.key, now - ago)

    def active(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for info in self.book:
            if info.migration is not None:
                for node in (info.node, info.migrating_to):
                    if node:
                        busy[node] = busy.get(node, 0) + 1
        return busy

    async def step(self) -> None:
        now = time.monotonic()
        receivers = {n.name for n in self.nodes if n.criu.usable}
        plan = self.rebalancer.step(
            self.book.ledger, now, self.movable(now), self.active(), receivers
        )
        for note in plan.notes:
            self.on_note(note.outcome)
            if note.outcome != "migrate" and self._reported.get(note.node) != note.outcome:
                self._reported[note.node] = note.outcome
                log.info("rebalancing %s: %s", note.node, note.reason)
        for node in list(self._reported):
            if self.rebalancer.hot_for(node) == 0:
                del self._reported[node]  # the hot spell is over
        for move in plan.moves:
            info = self.book.get(move.key)
            if info is None:
                continue
            await self.isolation.run(
                info.key,
                f"moving {info.namespace}/{info.name} to {move.target}",
                functools.partial(self._migrate, info, move.target, move.reason),
                functools.partial(self._report, info),
            )

    async def _report(self, info: ProcessInfo, failure: Failure) -> None:
        self.events.post(info.ref, "Warning", "RebalancingFailed", failure.message)

    async def _migrate(self, info: ProcessInfo, target: str, reason: str) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": "ProcessMigration",
            "metadata": {
                "generateName": f"{info.name[:40]}-rebalance-",
                "namespace": info.namespace,
                "labels": {INITIATOR: "rebalancer"},
                "annotations": {"serverlessos.io/reason": reason[:1000]},
            },
            "spec": {"process": info.name, "targetNode": target, "mode": MigrationMode.AUTO},
        }
        created = await self.kube.create_migration(info.namespace, body)
        name = created["metadata"]["name"]
        log.info("rebalancing %s/%s to %s (%s): %s", *info.key, target, name, reason)
        self.events.post(
            info.ref, "Normal", "Rebalancing", f"moving to {target} ({name}): {reason}"
        )
