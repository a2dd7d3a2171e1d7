"""Node loss: a node whose agent stops heartbeating past the grace period is lost; its
processes get condition NodeLost and are placed again (restartPolicy Never: Failed).
When its agent is heard from again, the copies it still runs are stopped (the fresh
list makes AgentReports see them as strays): never two."""

from __future__ import annotations

import logging
import time

from ..api.conditions import set_condition
from ..api.v1alpha1 import ProcessPhase, RestartPolicy
from ..infra.agents import AgentPool
from ..infra.events import EventSink
from ..nodes.book import NodeBook
from .book import ProcessBook, ProcessInfo

log = logging.getLogger(__name__)


class NodeLoss:
    def __init__(
        self,
        book: ProcessBook,
        nodes: NodeBook,
        agents: AgentPool,
        events: EventSink,
        heartbeat_grace: float = 30.0,
    ) -> None:
        self.book = book
        self.nodes = nodes
        self.agents = agents
        self.events = events
        self.heartbeat_grace = heartbeat_grace

    async def check(self) -> list[ProcessInfo]:
        """Mark nodes whose agents stopped heartbeating; returns processes to place again."""
        now = time.monotonic()
        again = []
        for node in self.nodes:
            if not node.endpoint:
                continue
            silent = now - node.seen > self.heartbeat_grace
            if silent and not node.lost:
                self.nodes.set_lost(node, True)
                log.warning("node %s lost: no heartbeat for %.0fs", node.name, now - node.seen)
                again += await self.evacuate(node.name)
            elif not silent and node.lost:
                self.nodes.set_lost(node, False)
                log.info("node %s is back; listing what its agent runs", node.name)
                self.agents.resync(node.name)
        return again

    async def node_removed(self, name: str) -> list[ProcessInfo]:
        """Its ServerlessNode was deleted: its agent is gone for good."""
        self.nodes.remove(name)
        return await self.evacuate(name)

    async def evacuate(self, node: str) -> list[ProcessInfo]:
        again = []
        message = f"node {node} stopped heartbeating for over {self.heartbeat_grace:.0f}s"
        for info in self.book:
            if info.node != node or not info.active:
                continue
            try:
                async with self.book.lock(info.key):  # not while a start to that node is in flight
                    if info.node != node:
                        continue
                    if await self._mark_lost(info, message):
                        again.append(info)
            except Exception:
                log.exception("evacuating %s/%s from %s failed", info.namespace, info.name, node)
        return again

    async def _mark_lost(self, info: ProcessInfo, message: str) -> bool:
        """NodeLost; True if it is to be placed again."""
        conditions = set_condition(info.conditions, "NodeLost", True, "NodeLost", message)
        conditions = set_condition(conditions, "Ready", False, "NodeLost", message)
        self.events.post(info.ref, "Warning", "NodeLost", message)
        if info.spec.restart_policy == RestartPolicy.NEVER:
            await self.book.patch(
                info,
                {
                    "phase": ProcessPhase.FAILED,
                    "reason": "NodeLost",
                    "message": message,
                    "conditions": conditions,
                },
            )
            return False
        info.node = None
        await self.book.patch(
            info,
            {
                "phase": ProcessPhase.PENDING,
                "node": None,
                "pid": None,
                "reason": "NodeLost",
                "message": message,
                "conditions": conditions,
            },
        )
        return True
