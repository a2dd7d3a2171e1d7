"""Kopf handlers: translate watch events and lifecycle hooks into controller calls.

Nothing here decides anything; see controller.py. Every handler is async: kopf
runs sync handlers in worker threads, and the controller (its dicts, its gRPC
channels) lives on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from .api.schema import GROUP, VERSION
from .balancer import Balancer
from .clustercgroups import ClusterCgroups
from .config import OperatorConfig
from .controller import ProcessController, ProcessInfo, Retry
from .daemonset import manifest
from .kube import CGROUPS, MIGRATIONS, NODES, PROCESSES, Kube
from .ledger import Ledger
from .metrics import OperatorMetrics
from .migrator import Migrator
from .placement import Backpressure
from .pressure import PressureModel
from .rebalance import Rebalancer

log = logging.getLogger(__name__)
FINALIZER = "serverlessos.io/finalizer"


class _State:
    config: OperatorConfig
    controller: ProcessController
    migrator: Migrator
    cgroups: ClusterCgroups
    wake: asyncio.Event
    tasks: list[asyncio.Task[None]]
    events: set[asyncio.Task[None]]  # fire-and-forget tasks, kept so they are not collected


state = _State()


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event without waiting for it (a lost Event is only a lost note).

    Not kopf.event: that needs kopf's handler context, and agent reports arrive outside it.
    """

    async def post() -> None:
        try:
            await state.controller.kube.post_event(body, type_, reason, message)
        except Exception as exc:
            log.debug("could not post event %s for %s: %s", reason, body["metadata"], exc)

    _background(post())


def _notify(info: ProcessInfo, type_: str, reason: str, message: str) -> None:
    _post_event(info.body, type_, reason, message)


async def _every(seconds: float, what: str, action: Any, wake: asyncio.Event | None = None) -> None:
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


async def _place_waiting() -> None:
    """Retry processes not started yet: Unschedulable, refused, their node lost, or
    placed but not confirmed running (the agent was unreachable)."""
    ctrl = state.controller
    for info in list(ctrl.processes.values()):
        if info.resize_pending:
            await ctrl.apply_resources(info.key)
        waiting = info.node is None or info.phase in (None, "Pending", "Scheduled")
        if waiting and not info.deleting and info.phase not in ("Succeeded", "Failed"):
            with contextlib.suppress(Retry):
                await ctrl.ensure(info.to_body())


async def _check_nodes() -> None:
    if await state.controller.check_nodes():
        state.wake.set()


async def _apply_daemonset() -> None:
    await state.controller.kube.apply_daemonset(
        manifest(state.config), field_manager="serverlessos-operator"
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Silent watch hangs are kopf's most reported failure: bound every watch.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.persistence.finalizer = FINALIZER
    # Status is ours (and pruned to the CRD's schema): keep kopf's state in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="serverlessos.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="serverlessos.io"
    )
    # Post our own Events (kopf.event); kopf's per-handler chatter only when it is a problem.
    settings.posting.level = logging.WARNING

    # Kubernetes API calls run in threads (the official client is synchronous);
    # a burst of creations needs more than the default handful.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    state.events = set()
    state.config = OperatorConfig.from_env()
    kube = Kube()
    cfg = state.config
    ledger = Ledger(
        PressureModel(psi_weight=cfg.placement.psi_weight),
        stale_after=cfg.placement.stale_after,
        settle=cfg.placement.settle,
    )
    placer = Backpressure(cfg.placement.choices, cfg.placement.scan_below)
    ctrl = ProcessController(kube, placer, _notify, cfg.heartbeat_grace, ledger)
    state.controller = ctrl
    state.wake = asyncio.Event()
    # Know every process before listening to agents (which starts with the nodes),
    # so strays are told apart from the first list on.
    state.cgroups = ClusterCgroups(ctrl, cfg.quota.lease)
    # Budgets before processes start: a member must not start with its own limit.
    for body in await kube.list_cgroups():
        state.cgroups.upsert(body)
    for body in await kube.list_processes():
        ctrl.upsert_process(body)
    ctrl.synced = True
    for body in await kube.list_serverless_nodes():
        ctrl.upsert_serverless_node(body)
    metrics = OperatorMetrics()

    def migration_finished(mode: str, phase: str, downtime: float | None) -> None:
        metrics.migrations.labels(mode, phase).inc()
        if phase == "Succeeded" and downtime is not None:
            metrics.migration_downtime.labels(mode).observe(downtime)

    state.migrator = Migrator(ctrl, _post_event, migration_finished)
    ctrl.on_placement = lambda placed: metrics.placements.labels(
        "placed" if placed else "unschedulable"
    ).inc()

    def pressures() -> dict[str, float]:
        now = time.monotonic()
        found = {n.name: ctrl.ledger.pressure(n, now) for n in ctrl.ledger}
        return {name: p for name, p in found.items() if p is not None}

    def budgets() -> list[tuple[str, str, int, int]]:
        return [
            (b.namespace, b.name, b.cpu_millis, sum(b.shares.values()))
            for b in state.cgroups.budgets.values()
        ]

    metrics.watch(ctrl.phase_counts, lambda: len(ctrl.pool.nodes()), pressures, budgets)
    if state.config.metrics_port:
        metrics.serve("0.0.0.0", state.config.metrics_port)
    loop = asyncio.get_running_loop()
    state.tasks = [
        loop.create_task(
            _every(cfg.retry_interval, "placing waiting processes", _place_waiting, state.wake)
        ),
        loop.create_task(_every(2.0, "checking node heartbeats", _check_nodes)),
        loop.create_task(_every(cfg.usage_interval, "polling the agents", ctrl.poll_nodes)),
    ]
    state.tasks.append(
        loop.create_task(_every(cfg.quota.interval, "enforcing ClusterCgroups", state.cgroups.step))
    )
    if cfg.rebalancing_enabled:
        balancer = Balancer(
            ctrl,
            Rebalancer(cfg.rebalancing),
            _post_event,
            lambda outcome: metrics.rebalance_decisions.labels(outcome).inc(),
        )
        state.tasks.append(
            loop.create_task(_every(cfg.rebalancing.interval, "rebalancing", balancer.step))
        )
    if cfg.manage_daemonset:
        state.tasks.append(
            loop.create_task(_every(60.0, "applying the agent DaemonSet", _apply_daemonset))
        )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in state.tasks:
        task.cancel()
    await state.migrator.close()
    await state.controller.close()


@kopf.on.event(GROUP, VERSION, PROCESSES)
async def process_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Every watch event of a ServerlessProcess; type None is the initial listing.

    Creation is driven from here rather than from kopf's create/resume handlers:
    those wait for kopf's finalizer round trip and write progress annotations,
    extra API writes that cost seconds on a busy API server. The placing loop
    retries what this does not finish.
    """
    if type == "DELETED":
        state.controller.forget_process(
            (body["metadata"]["namespace"], body["metadata"]["name"]), body["metadata"]["uid"]
        )
        return
    info = state.controller.upsert_process(body)
    if info.resize_pending:
        _background(state.controller.apply_resources(info.key))
    startable = info.node is None or info.phase in (None, "Pending", "Scheduled")
    if type in ("ADDED", None) and startable and not info.deleting:
        _background(_ensure_now(dict(body)))


def _background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    state.events.add(task)
    task.add_done_callback(state.events.discard)


async def _ensure_now(body: dict[str, Any]) -> None:
    try:
        await state.controller.ensure(body)
    except Retry as exc:
        log.info(
            "%s/%s: %s (retrying)", body["metadata"]["namespace"], body["metadata"]["name"], exc
        )
    except Exception:
        log.exception(
            "starting %s/%s failed; the placing loop retries",
            body["metadata"]["namespace"],
            body["metadata"]["name"],
        )


@kopf.on.delete(GROUP, VERSION, PROCESSES)
async def delete_process(body: kopf.Body, **_: Any) -> None:
    try:
        await state.controller.delete(body)
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc


@kopf.on.event(GROUP, VERSION, NODES)
async def serverless_node_event(type: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        await state.controller.forget_serverless_node(body["metadata"]["name"])
    else:
        state.controller.upsert_serverless_node(body)
    state.wake.set()  # capacity may have appeared


@kopf.on.event(GROUP, VERSION, MIGRATIONS)
async def migration_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """New ProcessMigrations, and (in the initial listing) those an earlier operator
    left active: the migrator finishes or rolls back each (see migrator.py)."""
    if type != "DELETED":
        state.migrator.submit(body)


@kopf.on.event(GROUP, VERSION, CGROUPS)
async def cgroup_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """A budget appeared, changed or went: its members are re-split next interval,
    and processes waiting for it are retried."""
    if type == "DELETED":
        state.cgroups.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
    else:
        state.cgroups.upsert(body)
    state.wake.set()


@kopf.on.event("", "v1", "nodes")
async def kube_node_event(type: str, body: kopf.Body, **_: Any) -> None:
    if type != "DELETED":
        state.controller.upsert_kube_node(body)


@kopf.on.probe(id="processes")
async def probe_processes(**_: Any) -> int:
    return len(state.controller.processes)
