"""Bringing a process to running on some node: admit, place, start.

Rules that keep users' trust:
- Decide, record, then act: the chosen node is written to status *before*
  StartProcess, so an operator killed at any point resumes on the same node,
  and StartProcess's ALREADY_EXISTS (same owner uid) is success: never a second copy.
- Admission (its budget) and placement run without an await between them: two
  processes of one budget cannot both take its last bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.conditions import find, set_condition
from ..api.v1alpha1 import ProcessPhase
from ..infra.agents import AgentPool, AgentUnavailable
from ..infra.events import EventSink
from ..scheduling.placement import Placer
from .admission import BudgetPolicy
from .agent_status import AgentStatus
from .agent_view import start_request
from .book import ProcessBook, ProcessInfo
from .env import EnvNotReady, EnvSource, resolve
from .retry import Refused, Retry

log = logging.getLogger(__name__)


class ProcessStarter:
    def __init__(
        self,
        book: ProcessBook,
        placer: Placer,
        agents: AgentPool,
        events: EventSink,
        *,
        budgets: BudgetPolicy,
        env_source: EnvSource,
        on_placement: Callable[[bool], None] = lambda placed: None,
    ) -> None:
        self.book = book
        self.placer = placer
        self.agents = agents
        self.events = events
        self.budgets = budgets
        self.env_source = env_source  # Secrets and ConfigMaps, for valueFrom
        self.on_placement = on_placement  # for metrics: placed (True) or unschedulable
        self.agent_status = AgentStatus(book, events)

    async def ensure(self, info: ProcessInfo) -> None:
        """Bring one process to running on some node; idempotent. Raises Retry."""
        began = time.monotonic()
        async with self.book.lock(info.key):
            waited = time.monotonic() - began
            if not self.book.current(info):
                return  # deleted (or replaced by a new object of that name) meanwhile
            if not info.active:
                return
            if info.node is not None and info.phase == ProcessPhase.RUNNING:
                return  # started; its agent's stream keeps the status current
            env = await self._environment(info)  # before placing: nothing held meanwhile
            if info.node is None:
                await self._place(info)
            placed = time.monotonic()
            assert info.node is not None
            await self._start(info, info.node, env)
            log.info(
                "%s/%s started on %s (lock %.0f ms, place %.0f ms, start %.0f ms)",
                info.namespace,
                info.name,
                info.node,
                waited * 1000,
                (placed - began - waited) * 1000,
                (time.monotonic() - placed) * 1000,
            )

    async def _place(self, info: ProcessInfo) -> None:
        wait = self.budgets.admit(info)
        if wait is not None:
            reason, message = wait
            if info.reason_shown != message:
                info.reason_shown = message
                self.events.post(info.ref, "Warning", reason, message)
            await self.book.patch(
                info,
                {
                    "phase": ProcessPhase.PENDING,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": info.generation,
                    "conditions": set_condition(
                        info.conditions, "Admitted", False, reason, message
                    ),
                },
            )
            raise Retry(message)
        decision = self.placer.place(info.request, self.book.ledger, time.monotonic())
        self.on_placement(decision.node is not None)
        if decision.node is None:
            if info.phase != ProcessPhase.UNSCHEDULABLE:
                self.events.post(info.ref, "Warning", "FailedScheduling", decision.reason)
            await self.book.patch(
                info,
                {
                    "phase": ProcessPhase.UNSCHEDULABLE,
                    "reason": "Unschedulable",
                    "message": decision.reason,
                    "observedGeneration": info.generation,
                    "conditions": set_condition(
                        info.conditions, "Scheduled", False, "Unschedulable", decision.reason
                    ),
                },
            )
            raise Retry(decision.reason)
        # Decide, record, then act (see the module docstring).
        info.node = decision.node
        conditions = set_condition(
            info.conditions, "Scheduled", True, "Placed", f"on node {decision.node}"
        )
        if find(conditions, "Admitted") is not None:  # it waited for its budget
            conditions = set_condition(conditions, "Admitted", True, "WithinBudget")
        await self.book.patch(
            info,
            {
                "phase": ProcessPhase.SCHEDULED,
                "node": decision.node,
                "reason": "Scheduled",
                "message": "",
                "observedGeneration": info.generation,
                "conditions": conditions,
            },
        )
        self.events.post(
            info.ref, "Normal", "Scheduled", f"placed on {decision.node}: {decision.reason}"
        )

    async def _environment(self, info: ProcessInfo) -> dict[str, str]:
        """Its environment, valueFrom variables read; waits (Retry) while one is missing."""
        try:
            return await resolve(self.env_source, info.namespace, info.spec.env)
        except EnvNotReady as exc:
            message = str(exc)
            if info.reason_shown != message:
                info.reason_shown = message
                self.events.post(info.ref, "Warning", exc.reason, message)
            await self.book.patch(
                info,
                {"reason": exc.reason, "message": message, "observedGeneration": info.generation},
            )
            raise Retry(message) from exc

    async def _start(self, info: ProcessInfo, node: str, env: dict[str, str]) -> None:
        try:
            stub = self.agents.stub(node)
            request = start_request(
                info.namespace,
                info.name,
                info.uid,
                info.spec,
                env=env,
                cpu_millis=self.budgets.cpu_share(info),
            )
            lease = self.budgets.start_lease(info)
            if lease is not None:
                request.lease.CopyFrom(lease)
            try:
                process = await stub.StartProcess(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                ref = pb.ProcessRef(namespace=info.namespace, name=info.name)
                process = await stub.GetProcess(pb.GetProcessRequest(ref=ref), timeout=15)
                if process.spec.owner.uid != info.uid:
                    raise Retry(
                        f"node {node} still runs an older process named {info.name}; "
                        "waiting for it to be stopped"
                    ) from exc
        except AgentUnavailable as exc:
            raise Retry(str(exc)) from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):
                # This node cannot run it (a missing privilege, a limit above its size,
                # as many processes as it keeps): say why and place it again.
                message = f"node {node} refused the process: {exc.details()}"
                info.node = None
                await self.book.patch(
                    info,
                    {
                        "phase": ProcessPhase.PENDING,
                        "node": None,
                        "reason": "NodeRefused",
                        "message": message,
                    },
                )
                raise Refused(message) from exc
            raise Retry(f"agent on {node}: {exc.code().name}: {exc.details()}") from exc
        await self.agent_status.apply(info, node, process)
