"""The composition root: builds every part of the operator once, wires them, lists
what exists, and runs the loops. Nothing here decides anything; handlers/ feed it
watch events, and each part does one thing (see the package READMEs' module map)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.auth.pki import CA

from .api.meta import describe, object_ref
from .api.v1alpha1 import ClusterCgroup, MigrationPhase, ProcessMigration, ServerlessNode
from .auth.ca_store import ensure_ca
from .auth.credentials import OperatorCredentials
from .auth.signer import Request as CertificateRequest
from .auth.signer import decide
from .auth.tickets import MigrationTickets
from .budgets.book import BudgetBook
from .budgets.controller import ClusterCgroupController
from .config import OperatorConfig
from .infra.agents import AgentPool
from .infra.daemonset import manifest
from .infra.events import EventRecorder
from .infra.kube import Kube
from .infra.metrics import OperatorMetrics
from .infra.refusals import Kind, Refusals, identity
from .logs.reader import ProcessLogs
from .logs.service import LogService
from .migration.controller import MigrationController
from .migration.record import MigrationStatus
from .nodes.book import NodeBook
from .processes.agent_status import AgentStatus
from .processes.book import ProcessBook, ProcessInfo
from .processes.deleter import ProcessDeleter
from .processes.intake import ProcessIntake
from .processes.node_loss import NodeLoss
from .processes.reports import AgentReports
from .processes.resizer import ProcessResizer
from .processes.starter import ProcessStarter
from .processes.usage import UsagePoller
from .processes.waiting import WaitingProcesses
from .rebalancing.controller import RebalanceController
from .rebalancing.policy import Rebalancer
from .scheduling.ledger import Ledger
from .scheduling.placement import Backpressure
from .scheduling.pressure import PressureModel

log = logging.getLogger(__name__)
M = TypeVar("M", ServerlessNode, ClusterCgroup, ProcessMigration)


async def every(
    seconds: float,
    what: str,
    action: Callable[[], Awaitable[Any]],
    wake: asyncio.Event | None = None,
) -> None:
    """Run `action` every `seconds` (sooner when `wake` is set) until cancelled; a
    failure of the whole pass is logged and the next pass runs as usual."""
    while True:
        try:
            await action()
        except Exception:
            log.exception("%s failed", what)
        if wake is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), seconds)
            wake.clear()


class Operator:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        cfg = config
        self.events = EventRecorder(kube)
        self.refusals = Refusals(kube, self.events)
        ledger = Ledger(
            PressureModel(psi_weight=cfg.placement.psi_weight),
            stale_after=cfg.placement.stale_after,
            settle=cfg.placement.settle,
        )
        self.placer = Backpressure(cfg.placement.choices, cfg.placement.scan_below)
        self.metrics = OperatorMetrics()
        # Mutual TLS to the agents: the CA and the operator's identity come at start().
        self.ca: CA | None = None
        self.credentials: OperatorCredentials | None = None
        self.tickets = MigrationTickets()  # signed with the CA, once start() has it
        # Agents report through the composition root, which hands them on (below).
        self.agents = AgentPool(
            self._agent_event,
            self._agent_sync,
            credentials=self._channel_credentials if cfg.tls else None,
        )
        self.nodes = NodeBook(
            ledger,
            self.agents,
            check_addresses=cfg.check_node_addresses,
            on_refused=self._endpoint_refused,
        )
        self.processes = ProcessBook(kube, ledger)
        self.budgets = BudgetBook(self.processes, cfg.quota.lease)
        self.intake = ProcessIntake(self.processes, self.refusals)
        self.starter = ProcessStarter(
            self.processes,
            self.placer,
            self.agents,
            self.events,
            budgets=self.budgets,
            env_source=kube,
            on_placement=lambda placed: self.metrics.placements.labels(
                "placed" if placed else "unschedulable"
            ).inc(),
        )
        self.resizer = ProcessResizer(self.processes, self.agents, self.events, self.budgets)
        self.waiting = WaitingProcesses(self.processes, self.starter, self.resizer, self.events)
        self.deleter = ProcessDeleter(self.processes, self.nodes, self.agents)
        self.reports = AgentReports(
            self.processes, self.agents, AgentStatus(self.processes, self.events), self.budgets
        )
        self.node_loss = NodeLoss(
            self.processes, self.nodes, self.agents, self.events, cfg.heartbeat_grace
        )
        self.usage = UsagePoller(self.processes, self.agents, self.events)
        self.cgroups = ClusterCgroupController(
            self.budgets, self.processes, self.agents, kube, self.events
        )
        self.migrations = MigrationController(
            self.processes,
            self.nodes,
            self.placer,
            self.agents,
            MigrationStatus(kube, self.processes, self.events, self._migration_finished),
            tickets=self.tickets,
        )
        self.rebalance = RebalanceController(
            self.processes,
            self.nodes,
            Rebalancer(cfg.rebalancing),
            kube,
            self.events,
            on_note=lambda outcome: self.metrics.rebalance_decisions.labels(outcome).inc(),
        )
        self.logs = LogService(
            kube, ProcessLogs(self.processes, self.agents.stub), cfg.log_api_service, cfg.namespace
        )
        self.wake = asyncio.Event()  # capacity may have appeared: retry waiting processes
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    # ----- start and stop --------------------------------------------------

    async def start(self) -> None:
        """List what exists (each object on its own), then start the loops."""
        try:  # the CA signs the agents' certificates whether or not it dials with TLS
            self.ca = await ensure_ca(self.kube, self.config.namespace)
        except Exception as exc:
            if self.config.tls:
                raise
            log.warning("no cluster CA (%s): agents' certificate requests wait", exc)
        self.tickets.ca = self.ca
        if self.config.tls:
            assert self.ca is not None
            self.credentials = OperatorCredentials(self.ca)
        # Budgets before processes start: a member must not start with its own limit.
        for body in await self.kube.list_cgroups():
            await self._listed(Kind.CLUSTER_CGROUP, body, self.cgroup_changed)
        # Every process known before listening to agents (which starts with the
        # nodes), so strays are told apart from the first list on.
        for body in await self.kube.list_processes():
            await self._listed(Kind.PROCESS, body, self.intake.admit)
        self.processes.synced = True
        for body in await self.kube.list_serverless_nodes():
            await self._listed(Kind.NODE, body, self.node_changed)
        self.metrics.watch(
            self.processes.phase_counts,
            lambda: len(self.agents.nodes()),
            self._pressures,
            self._budgets,
        )
        if self.config.metrics_port:
            self.metrics.serve("0.0.0.0", self.config.metrics_port)
        cfg = self.config
        serving_logs = False
        if cfg.log_api_port and self.ca is not None:
            serving_logs = await self.logs.start(self.ca, cfg.log_api_port)
        loops: list[tuple[float, str, Callable[[], Awaitable[Any]], asyncio.Event | None]] = [
            (cfg.retry_interval, "retrying waiting processes", self.waiting.retry, self.wake),
            (2.0, "checking node heartbeats", self._check_nodes, None),
            (cfg.usage_interval, "polling the agents", self.usage.poll, None),
            (cfg.quota.interval, "enforcing ClusterCgroups", self.cgroups.step, None),
        ]
        if cfg.rebalancing_enabled:
            loops.append((cfg.rebalancing.interval, "rebalancing", self.rebalance.step, None))
        if cfg.manage_daemonset:
            loops.append((60.0, "applying the agent DaemonSet", self._apply_daemonset, None))
        if self.credentials is not None:
            loops.append((600.0, "renewing the operator's certificate", self._renew, None))
        if serving_logs:
            loops.append((600.0, "renewing the log API's certificate", self.logs.renew, None))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(every(*spec)) for spec in loops]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.migrations.close()
        await self.logs.close()
        await self.agents.close()

    # ----- what the handlers hand in ---------------------------------------

    def start_soon(self, info: ProcessInfo) -> None:
        """Start a new process now, beside the watch (which must not wait for it)."""
        self.spawn(self.waiting.try_one(info))

    async def process_gone(self, namespace: str, name: str, uid: str) -> None:
        self.processes.forget((namespace, name), uid)
        self.waiting.forget((namespace, name))
        self.refusals.clear(Kind.PROCESS, namespace, name)

    async def node_changed(self, body: Mapping[str, Any]) -> None:
        obj = await self._parse(Kind.NODE, ServerlessNode, body)
        if obj is None:
            return
        if obj.status is not None:
            self.nodes.upsert_agent(obj.metadata.name, obj.status)
        self.wake.set()  # capacity may have appeared

    async def node_removed(self, name: str) -> None:
        await self.node_loss.node_removed(name)
        self.wake.set()

    async def cgroup_changed(self, body: Mapping[str, Any]) -> None:
        obj = await self._parse(Kind.CLUSTER_CGROUP, ClusterCgroup, body)
        if obj is None:
            return
        self.budgets.upsert(obj)
        self.wake.set()  # processes waiting for it are retried

    async def migration_changed(self, body: Mapping[str, Any]) -> None:
        """New ProcessMigrations, and (in the initial listing) those an earlier operator
        left active: the migration controller finishes or rolls back each."""
        obj = await self._parse(Kind.MIGRATION, ProcessMigration, body)
        if obj is not None:
            self.migrations.submit(obj)

    def spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _listed(
        self,
        kind: Kind,
        body: Mapping[str, Any],
        take: Callable[[Mapping[str, Any]], Awaitable[Any]],
    ) -> None:
        """One listed object at start-up: whatever goes wrong with it is its own (an
        Event on it); the watches list it again and it is tried once more then."""
        try:
            await take(body)
        except Exception as exc:
            namespace, name, uid, _ = identity(body)
            log.exception("taking in %s %s/%s at start-up failed", kind, namespace, name)
            self.events.post(
                object_ref(kind, namespace, name, uid),
                "Warning",
                "ReconcileError",
                f"the operator could not take this object in at start-up: {exc}",
            )

    async def certificate_requested(self, body: Mapping[str, Any]) -> None:
        """An agent asks for its node's certificate (auth/signer.py decides)."""
        if self.ca is None:
            return  # no CA (see start()): nothing signs here
        request = CertificateRequest.from_object(body)
        decision = decide(request, self.config.agent_user, self.ca)
        if decision is None:
            return
        await self.kube.decide_certificate(
            request.name,
            decision.approve,
            decision.reason,
            decision.message,
            decision.certificate,
        )
        log.info(
            "certificate request %s %s: %s",
            request.name,
            "approved" if decision.approve else "denied",
            decision.message,
        )

    def _endpoint_refused(self, node: str, why: str) -> None:
        log.warning("node %s: %s", node, why)
        self.events.post(
            object_ref("ServerlessNode", "", node, ""), "Warning", "EndpointRefused", why
        )

    def _channel_credentials(self) -> grpc.ChannelCredentials:
        assert self.credentials is not None  # channels are made after start() has them
        return self.credentials.channel_credentials()

    async def _renew(self) -> None:
        assert self.credentials is not None
        if self.credentials.renew_if_due():
            log.info("renewed the operator's certificate; reconnecting to the agents")
            self.agents.reconnect_all()

    async def _parse(self, kind: Kind, model: type[M], body: Mapping[str, Any]) -> M | None:
        """The object as its model; None if the model refuses it (reported)."""
        try:
            obj = model.model_validate(body)
        except ValidationError as exc:
            await self.refusals.refuse(kind, body, describe(exc))
            return None
        self.refusals.clear(kind, obj.metadata.namespace, obj.metadata.name)
        return obj

    # ----- wiring ------------------------------------------------------------

    async def _agent_event(self, node: str, process: pb.Process) -> None:
        await self.reports.on_event(node, process)

    async def _agent_sync(self, node: str, processes: list[pb.Process]) -> None:
        await self.reports.on_sync(node, processes)

    async def _check_nodes(self) -> None:
        if await self.node_loss.check():
            self.wake.set()

    async def _apply_daemonset(self) -> None:
        await self.kube.apply_daemonset(
            manifest(self.config.daemonset), field_manager="serverlessos-operator"
        )

    def _migration_finished(self, mode: str, phase: str, downtime: float | None) -> None:
        self.metrics.migrations.labels(mode, phase).inc()
        if phase == MigrationPhase.SUCCEEDED and downtime is not None:
            self.metrics.migration_downtime.labels(mode).observe(downtime)

    def _pressures(self) -> dict[str, float]:
        now = time.monotonic()
        ledger = self.processes.ledger
        found = {n.name: ledger.pressure(n, now) for n in ledger}
        return {name: p for name, p in found.items() if p is not None}

    def _budgets(self) -> list[tuple[str, str, int, int]]:
        return [(b.namespace, b.name, b.cpu_millis, sum(b.shares.values())) for b in self.budgets]
