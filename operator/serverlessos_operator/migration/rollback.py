"""Ending a migration on the agents: finishing (commit or roll back) on one of them,
rolling the whole migration back, and resolving one an earlier operator left in
Restoring (did the target's restore happen?).

Rolling back is target first (drop its copy, confirmed), then the source resumes:
never two live copies.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.meta import now
from ..api.v1alpha1 import MigrationPhase
from ..infra.agents import AgentPool, AgentUnavailable
from ..nodes.book import NodeBook
from .record import Migration, MigrationStatus

log = logging.getLogger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The target runs it: switch over (the controller's commit), given (m, process,
# frozen_at, resumed_at).
Commit = Callable[[Migration, pb.Process, float, float], Awaitable[None]]


def details(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


class MigrationEnding:
    finish_timeout = 660.0  # a committing post-copy source waits for its pages to be pulled
    retry_delay = 2.0

    def __init__(
        self,
        agents: AgentPool,
        nodes: NodeBook,
        status: MigrationStatus,
        release: Callable[[Migration], None],
    ) -> None:
        self.agents = agents
        self.nodes = nodes
        self.status = status
        self.release = release  # the process is free of this migration

    async def finish_on(self, m: Migration, node: str, *, commit: bool, attempts: int = 0) -> str:
        """FinishMigration on one agent, retried while it is unreachable (attempts 0 =
        until it answers or its node is lost)."""
        request = pb.FinishMigrationRequest(migration_id=m.uid, ref=m.process_ref, commit=commit)
        tried = 0
        while True:
            tried += 1
            try:
                # A best-effort call (attempts > 0) must not hang on a cut link.
                reply = await self.agents.stub(node).FinishMigration(
                    request, timeout=15.0 if attempts else self.finish_timeout
                )
                return reply.outcome
            except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in RETRYABLE:
                    return f"failed: {details(exc)}"
                if (attempts and tried >= attempts) or self.nodes.lost(node):
                    return f"not reached ({details(exc)})"
            await asyncio.sleep(self.retry_delay)

    async def roll_back(self, m: Migration, reason: str) -> None:
        log.warning("rolling back migration %s/%s: %s", m.namespace, m.name, reason)
        if m.target:
            if m.phase == MigrationPhase.RESTORING:
                # A restore may have run: the source resumes only once the target confirms
                # its copy is gone (or the target node is lost: fenced when it returns).
                await self.finish_on(m, m.target, commit=False)
            else:
                # The target was never asked to restore: it cannot run the process. Drop
                # what it received if it answers; its agent discards leftovers itself.
                await self.finish_on(m, m.target, commit=False, attempts=1)
        outcome = await self.finish_on(m, m.source, commit=False) if m.source else "untouched"
        info = self.status.process(m)
        if info is not None:
            await self.status.set_migrating(info, False, "RolledBack", f"{m.name}: {reason}")
        await self.status.write(
            m,
            phase=MigrationPhase.ROLLED_BACK,
            completedAt=now(),
            message=f"{reason}; source: {outcome}",
        )
        events = self.status.events
        events.post(m.ref, "Warning", "RolledBack", f"{reason}; {m.process} stays on {m.source}")
        if info is not None:
            events.post(info.ref, "Warning", "MigrationRolledBack", f"{m.name}: {reason}")
        await self.status.record_history(m)
        self.release(m)

    async def resolve_restoring(self, m: Migration, commit: Commit) -> None:
        """After a restart in Restoring: did the target's restore happen?"""
        while True:
            try:
                process = await self.agents.stub(m.target).GetProcess(
                    pb.GetProcessRequest(ref=m.process_ref), timeout=15
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self.roll_back(m, "the operator restarted before the target restored it")
                    return
                if exc.code() not in RETRYABLE:
                    raise
            except AgentUnavailable:
                pass
            else:
                if process.spec.owner.uid != m.process_uid:
                    await self.roll_back(m, "the target runs another process of that name")
                    return
                if process.state == pb.PROCESS_STATE_RUNNING:
                    frozen = m.status.get("frozenAt")
                    frozen_at = (
                        datetime.datetime.fromisoformat(frozen).timestamp() if frozen else 0.0
                    )
                    resumed_at = process.started_at.ToMilliseconds() / 1000
                    await commit(m, process, frozen_at, resumed_at)
                    return
                if process.state != pb.PROCESS_STATE_PENDING:
                    await self.roll_back(
                        m,
                        f"the restored copy on {m.target} is {pb.ProcessState.Name(process.state)}",
                    )
                    return
            if self.nodes.lost(m.target):
                await self.roll_back(m, f"the target node {m.target} was lost")
                return
            await asyncio.sleep(self.retry_delay)
