"""Drives the Rebalancer (rebalance.py) against the live cluster.

Each interval: offer the processes that may move (policy Auto, running, not
migrating, on a node whose CRIU works), count the migrations in flight per
node, step the rebalancer, and carry out its moves by creating ProcessMigrations
(the migrator does the rest, with all its safety). Every decision and its
reason becomes an Event on the process and a metric; a hot node with nothing
to move is reported once per hot spell, not every interval.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from .api.schema import API_VERSION
from .controller import ProcessController, ProcessInfo
from .process import request_of
from .rebalance import Movable, Rebalancer

log = logging.getLogger(__name__)

PostEvent = Callable[[dict[str, Any], str, str, str], None]
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


class Balancer:
    def __init__(
        self,
        ctrl: ProcessController,
        rebalancer: Rebalancer,
        post_event: PostEvent,
        on_note: OnNote = lambda outcome: None,
    ) -> None:
        self.ctrl = ctrl
        self.rebalancer = rebalancer
        self.post_event = post_event
        self.on_note = on_note
        self._reported: dict[str, str] = {}  # node -> last outcome reported this hot spell

    def movable(self, now: float) -> list[Movable]:
        out = []
        for info in self.ctrl.processes.values():
            if (info.spec.get("migration") or {}).get("policy") != "Auto":
                continue
            node = self.ctrl.nodes.get(info.node or "")
            if node is None or not node.criu.usable or info.phase != "Running":
                continue
            if info.migration is not None or info.deleting or info.stats is None:
                continue
            self._remember_history(info, now)
            out.append(
                Movable(
                    key=info.key,
                    node=node.name,
                    request=request_of(info.spec),
                    cpu_millis=info.stats.cores * 1000,
                    memory_bytes=info.stats.memory_bytes,
                )
            )
        return out

    def _remember_history(self, info: ProcessInfo, now: float) -> None:
        """Cooldowns survive an operator restart: the process's status keeps its moves."""
        if info.migrations:
            last = info.migrations[-1]
            ago = _seconds_ago(last.get("completedAt") or last.get("startedAt"))
            if ago is not None:
                self.rebalancer.remember(info.key, now - ago)

    def active(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for info in self.ctrl.processes.values():
            if info.migration is not None:
                for node in (info.node, info.migrating_to):
                    if node:
                        busy[node] = busy.get(node, 0) + 1
        return busy

    async def step(self) -> None:
        now = time.monotonic()
        receivers = {n.name for n in self.ctrl.nodes.values() if n.criu.usable}
        plan = self.rebalancer.step(
            self.ctrl.ledger, now, self.movable(now), self.active(), receivers
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
            info = self.ctrl.processes.get(move.key)
            if info is None:
                continue
            await self._migrate(info, move.target, move.reason)

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
            "spec": {"process": info.name, "targetNode": target, "mode": "Auto"},
        }
        try:
            created = await self.ctrl.kube.create_migration(info.namespace, body)
        except Exception as exc:
            log.warning("rebalancing %s/%s: could not create a migration: %s", *info.key, exc)
            return
        name = created["metadata"]["name"]
        log.info("rebalancing %s/%s to %s (%s): %s", *info.key, target, name, reason)
        self.post_event(
            info.body, "Normal", "Rebalancing", f"moving to {target} ({name}): {reason}"
        )
