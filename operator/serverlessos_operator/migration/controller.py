"""The migration controller: drives each ProcessMigration through the two agents.

The rules (mode, refusals, what to do after a restart) are in rules.py; this
module sequences the agent calls and records every phase *before* acting, so an
operator killed at any point finds out what it was doing.

  Scheduling     validate, pick the target and the mode
  Checkpointing  source: freeze + CRIU dump          (CheckpointProcess)
  Transferring   source -> target: the checkpoint      (same call, streamed progress)
  Restoring      target: CRIU restore                  (RestoreProcess)
  -- the target confirmed a running process: the commit point --
  Succeeded      status.node switched; source removes its frozen original
  RolledBack     target drops its copy, then the source resumes (rollback.py)
  Failed         refused before anything was touched
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Protocol

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.meta import now
from ..api.v1alpha1 import MigrationMode, MigrationPhase, ProcessMigration
from ..infra.agents import AgentPool, AgentUnavailable
from ..nodes.book import NodeBook
from ..processes.book import ProcessBook, ProcessInfo
from ..scheduling.placement import Placer, misfit
from .record import Migration, MigrationStatus
from .rollback import MigrationEnding, details
from .rules import (
    ProcessFacts,
    Recovery,
    choose_mode,
    format_duration,
    parse_duration,
    recovery,
    refusal,
)

log = logging.getLogger(__name__)


class TicketIssuer(Protocol):
    def __call__(
        self,
        *,
        migration_id: str,
        namespace: str,
        name: str,
        process_uid: str,
        source: str,
        target: str,
    ) -> bytes: ...


MODE_PB = {
    MigrationMode.STOP_AND_COPY: pb.MIGRATION_MODE_STOP_AND_COPY,
    MigrationMode.POST_COPY: pb.MIGRATION_MODE_POST_COPY,
}


def _rfc3339(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class MigrationController:
    checkpoint_timeout = 900.0  # a 1 GiB stop-and-copy on a slow link, with margin
    restore_timeout = 300.0

    def __init__(
        self,
        book: ProcessBook,
        nodes: NodeBook,
        placer: Placer,
        agents: AgentPool,
        status: MigrationStatus,
        *,
        tickets: TicketIssuer | None = None,
    ) -> None:
        self.book = book
        self.tickets = tickets  # the operator's signed word for each move (with TLS)
        self.nodes = nodes
        self.placer = placer
        self.agents = agents
        self.status = status
        self.ending = MigrationEnding(agents, nodes, status, self._release)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Migrations this operator took on: a watch event still in flight from one of
        # our own status writes (an older, active phase) must not start it again.
        self._seen: set[str] = set()

    def submit(self, obj: ProcessMigration) -> None:
        """Take on a migration seen in a watch (new, or found active after a restart)."""
        migration = Migration.from_object(obj)
        if (migration.phase is not None and migration.phase.terminal) or (
            migration.uid in self._seen
        ):
            return
        self._seen.add(migration.uid)
        task = asyncio.get_running_loop().create_task(self._run(migration))
        self._tasks[migration.uid] = task
        task.add_done_callback(lambda _: self._tasks.pop(migration.uid, None))

    def active(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    # ----- the sequence ----------------------------------------------------

    async def _run(self, m: Migration) -> None:
        try:
            action = recovery(m.phase)
            if action == Recovery.START:
                await self._migrate(m)
            elif action == Recovery.ROLL_BACK:
                self._claim(m)
                await self.ending.roll_back(m, "the operator restarted during the migration")
            else:
                self._claim(m)
                await self.ending.resolve_restoring(m, self._commit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("migration %s/%s failed unexpectedly", m.namespace, m.name)
            if m.phase in (MigrationPhase.PENDING, MigrationPhase.SCHEDULING, None):
                await self.status.fail(m, f"internal error: {exc!r}")
            else:
                await self.ending.roll_back(m, f"internal error: {exc!r}")

    def _claim(self, m: Migration) -> None:
        info = self.status.process(m)
        if info is not None:
            self.book.claim_migration(info, m.name, m.target or None)

    def _release(self, m: Migration) -> None:
        info = self.status.process(m)
        if info is not None:
            self.book.release_migration(info, m.name)

    async def _migrate(self, m: Migration) -> None:
        await self.status.write(m, phase=MigrationPhase.SCHEDULING, startedAt=now(), message="")
        info = self.status.process(m)
        facts = ProcessFacts(
            name=m.process,
            exists=info is not None,
            policy=info.spec.migration.policy if info else ProcessFacts.policy,
            phase=info.phase if info else None,
            node=info.node if info else None,
            deleting=info.deleting if info else False,
            active_migration=info.migration if info else None,
        )
        why = refusal(facts, m.name)
        if why is not None or info is None or info.node is None:
            await self.status.fail(m, why or "the process is gone")
            return
        self.book.claim_migration(info, m.name, None)  # a second migration is refused now
        source = info.node
        target, why = self._pick_target(m, info, source)
        if target is None:
            self._release(m)
            await self.status.fail(m, why)
            return
        requested = m.requested_mode
        if requested == MigrationMode.AUTO:
            requested = info.spec.migration.mode
        src, dst = self.nodes.get(source), self.nodes.get(target)
        if src is None or dst is None:
            self._release(m)
            await self.status.fail(m, f"node {target if dst is None else source} is not known")
            return
        mode, why = choose_mode(requested, source, src.criu, target, dst.criu)
        if mode is None or mode not in MODE_PB:
            self._release(m)
            await self.status.fail(m, why)
            return
        # Decide, record, act: the phase says what may have happened.
        self.book.claim_migration(info, m.name, target)
        await self.status.write(
            m,
            phase=MigrationPhase.CHECKPOINTING,
            sourceNode=source,
            targetNode=target,
            mode=mode,
            processUid=info.uid,
            message=f"{mode}: {why}",
        )
        await self.status.set_migrating(info, True, "Migrating", f"{m.name}: {source} -> {target}")
        events = self.status.events
        events.post(m.ref, "Normal", "Checkpointing", f"{m.process}: {source} -> {target}, {mode}")
        done = await self._checkpoint(m, source, target, dst.endpoint, mode, info.uid)
        if done is None:
            return  # rolled back
        frozen_at = done.frozen_at.ToMilliseconds() / 1000
        await self.status.write(
            m,
            phase=MigrationPhase.RESTORING,
            frozenAt=_rfc3339(frozen_at),
            transferredBytes=done.transferred_bytes,
            message=(
                f"{mode}: dumped in {done.dump_seconds:.2f}s, sent "
                f"{done.transferred_bytes} bytes in {done.transfer_seconds:.2f}s"
            ),
        )
        try:
            restored = await self.agents.stub(target).RestoreProcess(
                pb.RestoreProcessRequest(migration_id=m.uid), timeout=self.restore_timeout
            )
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            await self.ending.roll_back(m, f"restore on {target} failed: {details(exc)}")
            return
        await self._commit(
            m, restored.process, frozen_at, restored.resumed_at.ToMilliseconds() / 1000
        )

    async def _checkpoint(  # noqa: PLR0917 (private; one caller)
        self,
        m: Migration,
        source: str,
        target: str,
        target_endpoint: str,
        mode: MigrationMode,
        process_uid: str,
    ) -> pb.CheckpointProgress | None:
        """Freeze, dump and send on the source; None when it failed (rolled back)."""
        request = pb.CheckpointProcessRequest(
            ref=m.process_ref,
            migration_id=m.uid,
            target_endpoint=target_endpoint,
            mode=MODE_PB[mode],
            target_node=target,
        )
        if self.tickets is not None:
            request.ticket = self.tickets(
                migration_id=m.uid,
                namespace=m.namespace,
                name=m.process,
                process_uid=process_uid,
                source=source,
                target=target,
            )
        done: pb.CheckpointProgress | None = None
        try:
            stream = self.agents.stub(source).CheckpointProcess(
                request, timeout=self.checkpoint_timeout
            )
            async for progress in stream:
                if progress.stage == pb.CheckpointProgress.STAGE_DUMPED:
                    await self.status.write(
                        m,
                        phase=MigrationPhase.TRANSFERRING,
                        frozenAt=_rfc3339(progress.frozen_at.ToMilliseconds() / 1000),
                    )
                elif progress.stage == pb.CheckpointProgress.STAGE_TRANSFERRED:
                    done = progress
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            await self.ending.roll_back(m, f"checkpoint on {source} failed: {details(exc)}")
            return None
        if done is None:
            await self.ending.roll_back(
                m, f"the agent on {source} ended the checkpoint without a result"
            )
        return done

    def _pick_target(self, m: Migration, info: ProcessInfo, source: str) -> tuple[str | None, str]:
        ledger, request = self.book.ledger, info.request
        if m.requested_target:
            if m.requested_target == source:
                return None, f"{m.process} already runs on {source}"
            node = ledger.get(m.requested_target)
            if node is None:
                return None, f"there is no node {m.requested_target!r} with a ServerlessOS agent"
            why = misfit(request, node)
            if why is not None:
                return None, f"{m.process} cannot move to {m.requested_target}: {why}"
            return m.requested_target, "requested"
        decision = self.placer.place(request, ledger, time.monotonic(), exclude={source})
        if decision.node is None:
            return None, f"{m.process} cannot move to any other node: {decision.reason}"
        return decision.node, decision.reason

    async def _commit(
        self, m: Migration, process: pb.Process, frozen_at: float, resumed_at: float
    ) -> None:
        """The target runs it: switch the process over, then remove the source's original."""
        info = self.status.process(m)
        if info is None or info.deleting or info.uid != m.process_uid:
            await self._discard(m, f"{m.process} was deleted during the migration")
            return
        if info.node != m.source:
            # Its source node was lost meanwhile and it was placed again elsewhere:
            # that copy is the one; the restored one must go.
            await self._discard(m, f"{m.process} was placed again on {info.node} meanwhile")
            return
        downtime = max(0.0, resumed_at - frozen_at) if frozen_at and resumed_at else None
        await self.status.move_to(info, m.target, process)
        await self.status.write(
            m,
            downtime=format_duration(downtime) if downtime is not None else "",
            downtimeSeconds=round(downtime, 4) if downtime is not None else None,
            message=f"running on {m.target}; removing the original on {m.source}",
        )
        outcome = await self.ending.finish_on(m, m.source, commit=True)
        # The target only cleans up its received checkpoint: best effort (its agent
        # also removes leftovers by itself).
        await self.ending.finish_on(m, m.target, commit=True, attempts=3)
        self._release(m)
        mode = m.status.get("mode", "")
        await self.status.write(
            m,
            phase=MigrationPhase.SUCCEEDED,
            completedAt=now(),
            message=f"moved from {m.source} to {m.target} ({mode}); source: {outcome}",
        )
        events = self.status.events
        events.post(
            m.ref,
            "Normal",
            "Succeeded",
            f"{m.process} runs on {m.target}, downtime {m.status.get('downtime')}",
        )
        await self.status.record_history(m)
        limit = info.spec.migration.max_downtime
        if limit and downtime is not None and downtime > parse_duration(limit):
            message = (
                f"migration {m.name} paused {m.process} for {format_duration(downtime)}, "
                f"more than its maxDowntime of {limit}"
            )
            events.post(m.ref, "Warning", "DowntimeExceeded", message)
            events.post(info.ref, "Warning", "DowntimeExceeded", message)

    async def _discard(self, m: Migration, why: str) -> None:
        """The process was deleted, or placed again elsewhere, during its migration:
        neither the restored copy nor the frozen original stays."""
        target = await self.ending.finish_on(m, m.target, commit=False)
        source = await self.ending.finish_on(m, m.source, commit=True)
        await self.status.write(
            m,
            phase=MigrationPhase.FAILED,
            completedAt=now(),
            message=f"{why}; target: {target}; source: {source}",
        )
        self.status.events.post(m.ref, "Warning", "Failed", why)
        self._release(m)
