"""The migration controller: drives each ProcessMigration through the two agents.

The rules (mode, refusals, what to do after a restart) are in migration.py;
this module sequences the agent calls and records every phase *before* acting,
so an operator killed at any point finds out what it was doing.

  Scheduling     validate, pick the target and the mode
  Checkpointing  source: freeze + CRIU dump          (CheckpointProcess)
  Transferring   source -> target: the checkpoint      (same call, streamed progress)
  Restoring      target: CRIU restore                  (RestoreProcess)
  -- the target confirmed a running process: the commit point --
  Succeeded      status.node switched; source removes its frozen original
  RolledBack     target drops its copy, then the source resumes
  Failed         refused before anything was touched
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .agents import AgentUnavailable
from .api.schema import object_ref
from .controller import ProcessController, ProcessInfo
from .migration import (
    TERMINAL_PHASES,
    ProcessFacts,
    Recovery,
    choose_mode,
    format_duration,
    parse_duration,
    recovery,
    refusal,
)
from .placement import misfit
from .process import now, request_of

log = logging.getLogger(__name__)

PostEvent = Callable[[dict[str, Any], str, str, str], None]  # body, type, reason, message
# What finished: (mode, phase, downtime seconds or None), for metrics.
OnFinished = Callable[[str, str, float | None], None]

MODE_PB = {
    "StopAndCopy": pb.MIGRATION_MODE_STOP_AND_COPY,
    "PostCopy": pb.MIGRATION_MODE_POST_COPY,
}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _rfc3339(seconds: float) -> str:
    return (
        datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _details(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


@dataclass
class Migration:
    namespace: str
    name: str
    uid: str
    process: str
    requested_target: str
    requested_mode: str
    phase: str | None
    status: dict[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Migration:
        meta, spec = body["metadata"], body.get("spec") or {}
        status = dict(body.get("status") or {})
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            process=spec.get("process", ""),
            requested_target=spec.get("targetNode", ""),
            requested_mode=spec.get("mode", "Auto"),
            phase=status.get("phase"),
            status=status,
        )

    @property
    def body(self) -> dict[str, Any]:
        return object_ref("ProcessMigration", self.namespace, self.name, self.uid)

    @property
    def source(self) -> str:
        return str(self.status.get("sourceNode", ""))

    @property
    def target(self) -> str:
        return str(self.status.get("targetNode", ""))

    @property
    def ref(self) -> pb.ProcessRef:
        return pb.ProcessRef(namespace=self.namespace, name=self.process)


class Migrator:
    checkpoint_timeout = 900.0  # a 1 GiB stop-and-copy on a slow link, with margin
    restore_timeout = 300.0
    finish_timeout = 660.0  # a committing post-copy source waits for its pages to be pulled
    retry_delay = 2.0

    def __init__(
        self,
        ctrl: ProcessController,
        post_event: PostEvent,
        on_finished: OnFinished = lambda mode, phase, downtime: None,
    ) -> None:
        self.ctrl = ctrl
        self.kube = ctrl.kube
        self.post_event = post_event
        self.on_finished = on_finished
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Migrations this operator took on: a watch event still in flight from one of
        # our own status writes (an older, active phase) must not start it again.
        self._seen: set[str] = set()

    def submit(self, body: Mapping[str, Any]) -> None:
        """Take on a migration seen in a watch (new, or found active after a restart)."""
        migration = Migration.from_body(body)
        if migration.phase in TERMINAL_PHASES or migration.uid in self._seen:
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
                await self._roll_back(m, "the operator restarted during the migration")
            else:
                self._claim(m)
                await self._resolve_restoring(m)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("migration %s/%s failed unexpectedly", m.namespace, m.name)
            if m.phase in ("Pending", "Scheduling", None):
                await self._fail(m, f"internal error: {exc!r}")
            else:
                await self._roll_back(m, f"internal error: {exc!r}")

    def _process(self, m: Migration) -> ProcessInfo | None:
        return self.ctrl.processes.get((m.namespace, m.process))

    def _claim(self, m: Migration) -> None:
        info = self._process(m)
        if info is not None:
            info.migration = m.name
            info.migrating_to = m.target or None

    def _release(self, m: Migration) -> None:
        info = self._process(m)
        if info is not None and info.migration == m.name:
            info.migration = None
            info.migrating_to = None

    async def _migrate(self, m: Migration) -> None:
        await self._status(m, phase="Scheduling", startedAt=now(), message="")
        info = self._process(m)
        facts = ProcessFacts(
            name=m.process,
            exists=info is not None,
            policy=str(
                ((info.spec if info else {}).get("migration") or {}).get("policy", "Manual")
            ),
            phase=info.phase if info else None,
            node=info.node if info else None,
            deleting=info.deleting if info else False,
            active_migration=info.migration if info else None,
        )
        why = refusal(facts, m.name)
        if why is not None or info is None or info.node is None:
            await self._fail(m, why or "the process is gone")
            return
        info.migration = m.name  # claimed: a second migration is refused from here on
        source = info.node
        target, why = self._pick_target(m, info, source)
        if target is None:
            self._release(m)
            await self._fail(m, why)
            return
        requested = m.requested_mode
        if requested == "Auto":
            requested = str((info.spec.get("migration") or {}).get("mode", "Auto"))
        mode, why = choose_mode(
            requested, source, self.ctrl.nodes[source].criu, target, self.ctrl.nodes[target].criu
        )
        if mode is None or mode not in MODE_PB:
            self._release(m)
            await self._fail(m, why)
            return
        # Decide, record, act: the phase says what may have happened.
        info.migrating_to = target
        await self._status(
            m,
            phase="Checkpointing",
            sourceNode=source,
            targetNode=target,
            mode=mode,
            processUid=info.uid,
            message=f"{mode}: {why}",
        )
        await self.ctrl.set_migrating(info, True, "Migrating", f"{m.name}: {source} -> {target}")
        self.post_event(
            m.body, "Normal", "Checkpointing", f"{m.process}: {source} -> {target}, {mode}"
        )
        request = pb.CheckpointProcessRequest(
            ref=m.ref,
            migration_id=m.uid,
            target_endpoint=self.ctrl.nodes[target].endpoint,
            mode=MODE_PB[mode],
        )
        done: pb.CheckpointProgress | None = None
        try:
            stream = self.ctrl.pool.stub(source).CheckpointProcess(
                request, timeout=self.checkpoint_timeout
            )
            async for progress in stream:
                if progress.stage == pb.CheckpointProgress.STAGE_DUMPED:
                    await self._status(
                        m,
                        phase="Transferring",
                        frozenAt=_rfc3339(progress.frozen_at.ToMilliseconds() / 1000),
                    )
                elif progress.stage == pb.CheckpointProgress.STAGE_TRANSFERRED:
                    done = progress
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            await self._roll_back(m, f"checkpoint on {source} failed: {_details(exc)}")
            return
        if done is None:
            await self._roll_back(m, f"the agent on {source} ended the checkpoint without a result")
            return
        frozen_at = done.frozen_at.ToMilliseconds() / 1000
        await self._status(
            m,
            phase="Restoring",
            frozenAt=_rfc3339(frozen_at),
            transferredBytes=done.transferred_bytes,
            message=(
                f"{mode}: dumped in {done.dump_seconds:.2f}s, sent "
                f"{done.transferred_bytes} bytes in {done.transfer_seconds:.2f}s"
            ),
        )
        try:
            restored = await self.ctrl.pool.stub(target).RestoreProcess(
                pb.RestoreProcessRequest(migration_id=m.uid), timeout=self.restore_timeout
            )
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            await self._roll_back(m, f"restore on {target} failed: {_details(exc)}")
            return
        await self._commit(
            m, restored.process, frozen_at, restored.resumed_at.ToMilliseconds() / 1000
        )

    def _pick_target(self, m: Migration, info: ProcessInfo, source: str) -> tuple[str | None, str]:
        ledger, request = self.ctrl.ledger, request_of(info.spec)
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
        decision = self.ctrl.placer.place(request, ledger, time.monotonic(), exclude={source})
        if decision.node is None:
            return None, f"{m.process} cannot move to any other node: {decision.reason}"
        return decision.node, decision.reason

    async def _commit(
        self, m: Migration, process: pb.Process, frozen_at: float, resumed_at: float
    ) -> None:
        """The target runs it: switch the process over, then remove the source's original."""
        info = self._process(m)
        if info is None or info.deleting or info.uid != m.status.get("processUid"):
            await self._discard(m, f"{m.process} was deleted during the migration")
            return
        if info.node != m.source:
            # Its source node was lost meanwhile and it was placed again elsewhere:
            # that copy is the one; the restored one must go.
            await self._discard(m, f"{m.process} was placed again on {info.node} meanwhile")
            return
        downtime = max(0.0, resumed_at - frozen_at) if frozen_at and resumed_at else None
        if info is not None:
            await self.ctrl.move_to(info, m.target, process)
        await self._status(
            m,
            downtime=format_duration(downtime) if downtime is not None else "",
            downtimeSeconds=round(downtime, 4) if downtime is not None else None,
            message=f"running on {m.target}; removing the original on {m.source}",
        )
        outcome = await self._finish_on(m, m.source, commit=True)
        # The target only cleans up its received checkpoint: best effort (its agent
        # also removes leftovers by itself).
        await self._finish_on(m, m.target, commit=True, attempts=3)
        self._release(m)
        mode = m.status.get("mode", "")
        await self._status(
            m,
            phase="Succeeded",
            completedAt=now(),
            message=f"moved from {m.source} to {m.target} ({mode}); source: {outcome}",
        )
        self.post_event(
            m.body,
            "Normal",
            "Succeeded",
            f"{m.process} runs on {m.target}, downtime {m.status.get('downtime')}",
        )
        await self._record_history(m)
        limit = str(((info.spec if info else {}).get("migration") or {}).get("maxDowntime") or "")
        if info is not None and limit and downtime is not None and downtime > parse_duration(limit):
            message = (
                f"migration {m.name} paused {m.process} for {format_duration(downtime)}, "
                f"more than its maxDowntime of {limit}"
            )
            self.post_event(m.body, "Warning", "DowntimeExceeded", message)
            self.ctrl.notify(info, "Warning", "DowntimeExceeded", message)

    async def _discard(self, m: Migration, why: str) -> None:
        """The process was deleted, or placed again elsewhere, during its migration:
        neither the restored copy nor the frozen original stays."""
        target = await self._finish_on(m, m.target, commit=False)
        source = await self._finish_on(m, m.source, commit=True)
        await self._status(
            m,
            phase="Failed",
            completedAt=now(),
            message=f"{why}; target: {target}; source: {source}",
        )
        self.post_event(m.body, "Warning", "Failed", why)
        self._release(m)

    async def _resolve_restoring(self, m: Migration) -> None:
        """After a restart in Restoring: did the target's restore happen?"""
        while True:
            try:
                process = await self.ctrl.pool.stub(m.target).GetProcess(
                    pb.GetProcessRequest(ref=m.ref), timeout=15
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self._roll_back(m, "the operator restarted before the target restored it")
                    return
                if exc.code() not in RETRYABLE:
                    raise
            except AgentUnavailable:
                pass
            else:
                if process.spec.owner.uid != m.status.get("processUid"):
                    await self._roll_back(m, "the target runs another process of that name")
                    return
                if process.state == pb.PROCESS_STATE_RUNNING:
                    frozen = m.status.get("frozenAt")
                    frozen_at = (
                        datetime.datetime.fromisoformat(frozen).timestamp() if frozen else 0.0
                    )
                    resumed_at = process.started_at.ToMilliseconds() / 1000
                    await self._commit(m, process, frozen_at, resumed_at)
                    return
                if process.state != pb.PROCESS_STATE_PENDING:
                    await self._roll_back(
                        m,
                        f"the restored copy on {m.target} is {pb.ProcessState.Name(process.state)}",
                    )
                    return
            if self._lost(m.target):
                await self._roll_back(m, f"the target node {m.target} was lost")
                return
            await asyncio.sleep(self.retry_delay)

    # ----- rolling back ----------------------------------------------------

    async def _roll_back(self, m: Migration, reason: str) -> None:
        """Target first (drop its copy, confirmed), then resume the source."""
        log.warning("rolling back migration %s/%s: %s", m.namespace, m.name, reason)
        if m.target:
            if m.phase == "Restoring":
                # A restore may have run: the source resumes only once the target confirms
                # its copy is gone (or the target node is lost: fenced when it returns).
                await self._finish_on(m, m.target, commit=False)
            else:
                # The target was never asked to restore: it cannot run the process. Drop
                # what it received if it answers; its agent discards leftovers itself.
                await self._finish_on(m, m.target, commit=False, attempts=1)
        outcome = await self._finish_on(m, m.source, commit=False) if m.source else "untouched"
        info = self._process(m)
        if info is not None:
            await self.ctrl.set_migrating(info, False, "RolledBack", f"{m.name}: {reason}")
        await self._status(
            m, phase="RolledBack", completedAt=now(), message=f"{reason}; source: {outcome}"
        )
        self.post_event(
            m.body, "Warning", "RolledBack", f"{reason}; {m.process} stays on {m.source}"
        )
        if info is not None:
            self.ctrl.notify(info, "Warning", "MigrationRolledBack", f"{m.name}: {reason}")
        await self._record_history(m)
        self._release(m)

    async def _finish_on(self, m: Migration, node: str, *, commit: bool, attempts: int = 0) -> str:
        """FinishMigration on one agent, retried while it is unreachable (attempts 0 =
        until it answers or its node is lost)."""
        request = pb.FinishMigrationRequest(migration_id=m.uid, ref=m.ref, commit=commit)
        tried = 0
        while True:
            tried += 1
            try:
                # A best-effort call (attempts > 0) must not hang on a cut link.
                reply = await self.ctrl.pool.stub(node).FinishMigration(
                    request, timeout=15.0 if attempts else self.finish_timeout
                )
                return reply.outcome
            except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in RETRYABLE:
                    return f"failed: {_details(exc)}"
                if (attempts and tried >= attempts) or self._lost(node):
                    return f"not reached ({_details(exc)})"
            await asyncio.sleep(self.retry_delay)

    def _lost(self, node: str) -> bool:
        info = self.ctrl.nodes.get(node)
        return info is None or info.lost

    # ----- statuses --------------------------------------------------------

    async def _fail(self, m: Migration, reason: str) -> None:
        await self._status(m, phase="Failed", completedAt=now(), message=reason)
        self.post_event(m.body, "Warning", "Failed", reason)
        info = self._process(m)
        if info is not None and info.migration in (None, m.name):
            await self._record_history(m)

    async def _status(self, m: Migration, **fields: Any) -> None:
        m.status.update(fields)
        if "phase" in fields:
            m.phase = fields["phase"]
            if m.phase in TERMINAL_PHASES:
                self.on_finished(
                    str(m.status.get("mode") or "-"), str(m.phase), m.status.get("downtimeSeconds")
                )
        await self.kube.patch_migration_status(m.namespace, m.name, fields)

    async def _record_history(self, m: Migration) -> None:
        info = self._process(m)
        if info is None:
            return
        s = m.status
        entry = {
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
        await self.ctrl.record_migration(info, entry)
