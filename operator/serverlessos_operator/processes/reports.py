"""What the agents report about their processes, turned into statuses; and one copy only.

An agent reporting a process whose ServerlessProcess now lives on another node
(after a node loss) or no longer exists is told to stop it. A process an agent runs
while the books say it has no node (a node back before its processes were placed
again, or an operator that died between StartProcess and the status write) is
adopted rather than started a second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..infra.agents import AgentPool, AgentUnavailable
from .admission import BudgetPolicy
from .agent_status import AgentStatus
from .book import ProcessBook

log = logging.getLogger(__name__)


class AgentReports:
    def __init__(
        self, book: ProcessBook, agents: AgentPool, status: AgentStatus, budgets: BudgetPolicy
    ) -> None:
        self.book = book
        self.agents = agents
        self.status = status
        self.budgets = budgets
        self._background: set[asyncio.Task[None]] = set()

    async def on_sync(self, node: str, processes: list[pb.Process]) -> None:
        """The agent's full list (first contact, or after its stream fell behind)."""
        for process in processes:
            await self.on_event(node, process)

    async def on_event(self, node: str, process: pb.Process) -> None:
        if process.state in (pb.PROCESS_STATE_STOPPED, pb.PROCESS_STATE_FROZEN):
            return  # removed (or migrated away); frozen for a migration (migration/ reports)
        key = (process.spec.owner.namespace, process.spec.name)
        info = self.book.get(key)
        if info is not None and info.migrating_to == node and info.node != node:
            return  # the migration's new copy: the migration controller switches to it
        if info is None or info.uid != process.spec.owner.uid:
            if self.book.synced:
                self._spawn(self._stop_stray(node, process, "its ServerlessProcess is gone"))
            return
        # Under the process's lock: after an in-flight start's own status write, never
        # before it (a fast exit must not be overwritten by the older Running reply).
        async with self.book.lock(key):
            if not self.book.current(info) or info.deleting:
                return
            if info.node is None:
                if process.state not in (pb.PROCESS_STATE_RUNNING, pb.PROCESS_STATE_BACKOFF):
                    return
                info.node = node
                log.info("adopted %s/%s running on %s", key[0], key[1], node)
            if info.node != node:
                self._spawn(self._stop_stray(node, process, f"it was placed again, on {info.node}"))
                return
            held = process.spec.resources
            info.held_cpu = held.cpu_millis
            budgeted = self.budgets.cpu_share(info) is not None  # its CPU is its budget's
            wanted = info.request
            if held.memory_bytes != wanted.memory_bytes or (
                not budgeted and held.cpu_millis != wanted.cpu_millis
            ):
                info.resize_pending = True  # e.g. resized while the operator was down
            await self.status.apply(info, node, process)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run beside the agent's stream, which must not wait for a slow stop."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stop_stray(self, node: str, process: pb.Process, why: str) -> None:
        log.warning(
            "stopping %s/%s on %s: %s", process.spec.owner.namespace, process.spec.name, node, why
        )
        ref = pb.ProcessRef(namespace=process.spec.owner.namespace, name=process.spec.name)
        try:
            await self.agents.stub(node).StopProcess(pb.StopProcessRequest(ref=ref), timeout=60)
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            log.warning("could not stop stray %s on %s: %s", ref.name, node, exc)
