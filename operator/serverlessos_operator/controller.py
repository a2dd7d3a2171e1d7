"""The process controller: the operator's model of processes and nodes, and its rules.

Kopf handlers feed it objects and call `ensure`/`delete`; the agent pool feeds it
agent events. It decides placement, talks to agents, and writes statuses. Rules
that keep users' trust:

- Decide, record, then act: the chosen node is written to status *before*
  StartProcess, so an operator killed at any point resumes on the same node,
  and StartProcess's ALREADY_EXISTS (same owner uid) is success: never a second copy.
- One copy only: an agent reporting a process whose ServerlessProcess now lives
  on another node (after a node loss) or no longer exists is told to stop it.
- A node whose agent stops heartbeating past the grace period is lost: its
  processes get condition NodeLost and are placed again (restartPolicy Never: Failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import format_bytes_approx

from .agents import AgentPool, AgentUnavailable
from .api.schema import object_ref
from .kube import Kube
from .ledger import Ledger
from .migration import CriuSupport, history
from .placement import Placer, Taint
from .pressure import Signals
from .process import (
    TERMINAL,
    cpu_millis,
    memory_bytes,
    request_of,
    set_condition,
    start_request,
    status_from_agent,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
Notify = Callable[["ProcessInfo", str, str, str], None]  # info, type, reason, message


class Retry(Exception):
    """Not done yet; try again after `delay` (a signal to the caller, not a failure)."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Figures:
    """One process's figures from its node's agent, as of one poll."""

    cores: float  # CPU in use over the agent's last sampling interval
    throttled_seconds: float  # cumulative
    memory_bytes: int
    at: float  # our monotonic clock at the poll


@dataclass
class ProcessInfo:
    namespace: str
    name: str
    uid: str
    spec: dict[str, Any]
    generation: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    node: str | None = None
    phase: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, str] = field(default_factory=dict)
    deleting: bool = False
    written: dict[str, Any] = field(default_factory=dict)  # the last status we patched
    resize_pending: bool = False  # spec.resources changed and not yet applied on the node
    migrations: list[dict[str, Any]] = field(default_factory=list)  # status.migrations
    # An active migration (migrator.py): its name and its target node. The target's
    # copy is not a stray, and the frozen source is not to be reported.
    migration: str | None = None
    migrating_to: str | None = None
    # What the ledger holds for it: (node, cpu, memory) while it is placed and not over.
    reserved: tuple[str, int, int] | None = None
    stats: Figures | None = None  # its latest figures from its node's agent
    throttled_rate: float = 0.0  # seconds throttled per second, between the last two polls
    reason_shown: str = ""  # the last waiting reason posted as an Event (once each)
    held_cpu: int | None = None  # the CPU limit its agent last reported holding

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def active(self) -> bool:
        """Neither over nor being deleted."""
        return self.phase not in TERMINAL and not self.deleting

    @property
    def placed(self) -> bool:
        """Active on a node: it holds that node's resources (and its budget's share)."""
        return self.node is not None and self.active

    @property
    def body(self) -> dict[str, Any]:
        """Enough of the object to post Kubernetes Events about it."""
        return object_ref("ServerlessProcess", self.namespace, self.name, self.uid)

    def to_body(self) -> dict[str, Any]:
        """What from_body reads, as the operator last knew it."""
        body = self.body
        body["metadata"]["generation"] = self.generation
        body["metadata"]["labels"] = self.labels
        body["spec"] = self.spec
        body["status"] = {"phase": self.phase, "node": self.node, "conditions": self.conditions}
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ProcessInfo:
        meta, status = body["metadata"], body.get("status") or {}
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            spec=dict(body.get("spec") or {}),
            generation=int(meta.get("generation", 0)),
            labels=dict(meta.get("labels") or {}),
            node=status.get("node"),
            phase=status.get("phase"),
            conditions=list(status.get("conditions") or []),
            usage=dict(status.get("usage") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
            migrations=list(status.get("migrations") or []),
        )


@dataclass
class NodeInfo:
    name: str
    endpoint: str = ""
    cpu_millis: int = 0
    memory_bytes: int = 0
    heartbeat: str = ""  # the agent's lastHeartbeat, as written (the agent's clock)
    seen: float = 0.0  # our monotonic clock when it last changed (clocks may disagree)
    agent_ready: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    lost: bool = False
    criu: CriuSupport = field(default_factory=CriuSupport)


def signals_from(stats: pb.NodeStats, now: float) -> Signals:
    """An agent's sample as the ledger keeps it, dated on our clock by its age."""
    age = max(0.0, time.time() - stats.time.ToMilliseconds() / 1000) if stats.time.seconds else 0
    return Signals(
        at=now - age,
        cpu_psi=stats.cpu_pressure.some_avg10,
        memory_psi=stats.memory_pressure.some_avg10,
        io_psi=stats.io_pressure.some_avg10,
        cpu_used_millis=stats.cpu_usage_cores * 1000,
        memory_used_bytes=stats.memory_used_bytes
        or max(0, stats.memory_total_bytes - stats.memory_available_bytes),
        network_bytes_per_second=stats.network_bytes_per_second,
        network_capacity_bytes_per_second=stats.network_capacity_bytes_per_second,
    )


def _usage_moved(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    """Worth a status write: first figures, or CPU off by 20m / 20 %, memory by 10 %.
    (Every jitter would be a write per process per interval: API load for nothing.)"""
    if not old:
        return True
    cpu_old, cpu_new = cpu_millis(old["cpu"]), cpu_millis(new["cpu"])
    if abs(cpu_new - cpu_old) > max(20, cpu_old * 0.2):
        return True
    try:
        mem_old, mem_new = memory_bytes(old["memory"]), memory_bytes(new["memory"])
    except ValueError:
        return old["memory"] != new["memory"]
    return abs(mem_new - mem_old) > mem_old * 0.1


class ProcessController:
    def __init__(
        self,
        kube: Kube,
        placer: Placer,
        notify: Notify,
        heartbeat_grace: float = 30.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.kube = kube
        self.placer = placer
        self.ledger = ledger or Ledger()
        self.notify = notify
        self.heartbeat_grace = heartbeat_grace
        self.processes: dict[Key, ProcessInfo] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.pool = AgentPool(self.on_agent_event, self.on_agent_sync)
        self.synced = False  # processes listed: orphans can be told apart
        self._locks: dict[Key, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.on_placement: Callable[[bool], None] = lambda placed: None
        # ClusterCgroups (clustercgroups.py) plug in here: why a process must wait
        # (None: admitted), and the CPU limit its budget gives it (None: its own).
        self.admit: Callable[[ProcessInfo], tuple[str, str] | None] = lambda info: None
        self.cpu_share: Callable[[ProcessInfo], int | None] = lambda info: None
        self.start_lease: Callable[[ProcessInfo], pb.Lease | None] = lambda info: None

    def phase_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for info in self.processes.values():
            counts[info.phase or "Pending"] = counts.get(info.phase or "Pending", 0) + 1
        return counts

    # ----- the model, fed by watches --------------------------------------

    def upsert_process(self, body: Mapping[str, Any]) -> ProcessInfo:
        """Merge a watch event into the model, updating the known object in place (code
        holding it across an await must see the same object). The operator writes the
        status, so its own node, phase and conditions are ahead of any watch event."""
        fresh = ProcessInfo.from_body(body)
        known = self.processes.get(fresh.key)
        if known is None or known.uid != fresh.uid:
            if known is not None:
                self._account(known, gone=True)
            self.processes[fresh.key] = fresh
            self._account(fresh)
            return fresh
        if fresh.generation > known.generation:
            if fresh.spec.get("resources") != known.spec.get("resources"):
                known.resize_pending = known.node is not None or fresh.node is not None
            known.spec = fresh.spec
            known.generation = fresh.generation
        known.labels = fresh.labels  # labels change without a new generation
        known.deleting = known.deleting or fresh.deleting  # sticky
        if known.node is None and not known.written:
            known.node = fresh.node  # after a restart the status is all we know
        known.phase = known.phase or fresh.phase
        if not known.conditions:
            known.conditions = fresh.conditions
        if not known.migrations:
            known.migrations = fresh.migrations
        self._account(known)
        return known

    def forget_process(self, key: Key, uid: str) -> None:
        known = self.processes.get(key)
        if known is not None and known.uid == uid:
            self._account(known, gone=True)
            del self.processes[key]
            self._locks.pop(key, None)

    def upsert_serverless_node(self, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        status = body.get("status") or {}
        node = self.nodes.setdefault(name, NodeInfo(name))
        node.endpoint = status.get("endpoint", "")
        allocatable = status.get("allocatable") or {}
        node.cpu_millis = cpu_millis(allocatable.get("cpu") or "0")
        node.memory_bytes = memory_bytes(allocatable.get("memory") or "0")
        beat = status.get("lastHeartbeat") or ""
        if beat and beat != node.heartbeat:
            node.heartbeat, node.seen = beat, time.monotonic()
        ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
        node.agent_ready = bool(ready) and ready[0].get("status") == "True"
        node.criu = CriuSupport.from_status(status)
        if node.endpoint:
            self.pool.set_endpoint(name, node.endpoint)
        self._sync_ledger(node)

    def _sync_ledger(self, node: NodeInfo) -> None:
        """Only nodes with an agent are in the ledger (placement's candidates)."""
        if not node.endpoint:
            return
        entry = self.ledger.node(node.name)
        entry.cpu_millis, entry.memory_bytes = node.cpu_millis, node.memory_bytes
        entry.ready = node.agent_ready and not node.lost
        entry.labels, entry.taints = node.labels, node.taints

    async def forget_serverless_node(self, name: str) -> list[ProcessInfo]:
        """Its agent is gone for good: its processes are placed again."""
        self.nodes.pop(name, None)
        self.ledger.remove(name)
        self.pool.remove(name)
        return await self._evacuate(name)

    def upsert_kube_node(self, body: Mapping[str, Any]) -> None:
        name = body["metadata"]["name"]
        node = self.nodes.setdefault(name, NodeInfo(name))
        node.labels = dict(body["metadata"].get("labels") or {})
        node.taints = tuple(
            Taint(t.get("key", ""), t.get("value", ""), t.get("effect", "NoSchedule"))
            for t in (body.get("spec") or {}).get("taints") or []
        )
        self._sync_ledger(node)

    def _account(self, info: ProcessInfo, gone: bool = False) -> None:
        """Keep the ledger's reservations in step with where the process is (called
        wherever its node or phase may change: each such change is patched or watched)."""
        held = None
        if not gone and info.node and info.placed:
            request = request_of(info.spec)
            held = (info.node, request.cpu_millis, request.memory_bytes)
        if held == info.reserved:
            return
        if info.reserved is not None:
            self.ledger.release(*info.reserved)
        if held is not None:
            # Only a new placement is load the node's reports cannot show yet; one
            # already running (e.g. listed after an operator restart) is in them.
            new = info.phase in (None, "Pending", "Scheduled")
            self.ledger.reserve(*held, now=time.monotonic(), expect=new)
        info.reserved = held

    # ----- placing and starting -------------------------------------------

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _patch(self, info: ProcessInfo, status: dict[str, Any]) -> bool:
        if "conditions" in status:
            info.conditions = status["conditions"]
        if "phase" in status:
            info.phase = status["phase"]
        self._account(info)
        if all(info.written.get(k) == v for k, v in status.items()):
            return True  # e.g. the agent's Started event after our own Running patch
        done = await self.kube.patch_process_status(info.namespace, info.name, status)
        info.written.update(status)  # only once it is written
        return done

    async def ensure(self, body: Mapping[str, Any]) -> None:
        """Bring one process to running on some node; idempotent. Raises Retry."""
        info = self.upsert_process(body)
        began = time.monotonic()
        async with self._lock(info.key):
            waited = time.monotonic() - began
            if self.processes.get(info.key) is not info:
                return  # deleted (or replaced by a new object of that name) meanwhile
            if info.deleting or info.phase in TERMINAL:
                return
            if info.node is not None and info.phase == "Running":
                return  # started; its agent's stream keeps the status current
            if info.node is None:
                await self._place(info)
            placed = time.monotonic()
            assert info.node is not None
            await self._start(info, info.node)
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
        # Admission and the placement right after it run without an await between
        # them: two processes of one budget cannot both take its last bytes.
        wait = self.admit(info)
        if wait is not None:
            reason, message = wait
            if info.reason_shown != message:
                info.reason_shown = message
                self.notify(info, "Warning", reason, message)
            await self._patch(
                info,
                {
                    "phase": "Pending",
                    "reason": reason,
                    "message": message,
                    "observedGeneration": info.generation,
                    "conditions": set_condition(
                        info.conditions, "Admitted", False, reason, message
                    ),
                },
            )
            raise Retry(message)
        decision = self.placer.place(request_of(info.spec), self.ledger, time.monotonic())
        self.on_placement(decision.node is not None)
        if decision.node is None:
            if info.phase != "Unschedulable":
                self.notify(info, "Warning", "FailedScheduling", decision.reason)
            await self._patch(
                info,
                {
                    "phase": "Unschedulable",
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
        if any(c["type"] == "Admitted" for c in conditions):  # it waited for its budget
            conditions = set_condition(conditions, "Admitted", True, "WithinBudget")
        await self._patch(
            info,
            {
                "phase": "Scheduled",
                "node": decision.node,
                "reason": "Scheduled",
                "message": "",
                "observedGeneration": info.generation,
                "conditions": conditions,
            },
        )
        self.notify(info, "Normal", "Scheduled", f"placed on {decision.node}: {decision.reason}")

    async def _start(self, info: ProcessInfo, node: str) -> None:
        try:
            stub = self.pool.stub(node)
            request = start_request(
                info.namespace, info.name, info.uid, info.spec, self.cpu_share(info)
            )
            lease = self.start_lease(info)
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
            ):
                # This node cannot run it (a missing privilege, a limit above its size):
                # say why and place it again.
                message = f"node {node} refused the process: {exc.details()}"
                self.notify(info, "Warning", "NodeRefused", message)
                info.node = None
                await self._patch(
                    info,
                    {"phase": "Pending", "node": None, "reason": "NodeRefused", "message": message},
                )
                raise Retry(message) from exc
            raise Retry(f"agent on {node}: {exc.code().name}: {exc.details()}") from exc
        await self._apply_agent_state(info, node, process)

    async def _apply_agent_state(self, info: ProcessInfo, node: str, process: pb.Process) -> None:
        before = info.phase
        info.held_cpu = process.spec.resources.cpu_millis
        status = status_from_agent(process, node, info.conditions)
        status["observedGeneration"] = info.generation
        await self._patch(info, status)
        if status["phase"] != before:
            kind = "Warning" if status["phase"] == "Failed" else "Normal"
            detail = f"pid {process.pid}" if process.pid else status["message"] or ""
            self.notify(
                info, kind, status["phase"], f"{status['phase']} on {node} {detail}".strip()
            )

    # ----- resizing --------------------------------------------------------

    async def apply_resources(self, key: Key) -> None:
        """Push changed spec.resources to the running process's cgroup (live).

        Success or refusal (e.g. memory below what the process uses) shows in the
        ResourcesApplied condition; an unreachable agent is retried by the placing loop.
        """
        info = self.processes.get(key)
        if info is None:
            return
        async with self._lock(key):
            if not info.resize_pending or info.node is None or info.deleting:
                return
            if info.phase in TERMINAL:
                info.resize_pending = False
                return
            request = request_of(info.spec)
            ref = pb.ProcessRef(namespace=info.namespace, name=info.name)
            share = self.cpu_share(info)
            resources = pb.Resources(
                cpu_millis=request.cpu_millis if share is None else min(share, request.cpu_millis),
                memory_bytes=request.memory_bytes,
            )
            wanted = (
                f"cpu {info.spec['resources']['cpu']}, memory {info.spec['resources']['memory']}"
            )
            try:
                await self.pool.stub(info.node).UpdateResources(
                    pb.UpdateResourcesRequest(ref=ref, resources=resources), timeout=15
                )
            except AgentUnavailable:
                return  # retried
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return  # retried
                info.resize_pending = False
                message = f"{wanted} refused by node {info.node}: {exc.details()}"
                self.notify(info, "Warning", "ResizeRefused", message)
                await self._patch(
                    info,
                    {
                        "conditions": set_condition(
                            info.conditions, "ResourcesApplied", False, "Refused", message
                        )
                    },
                )
                return
            info.resize_pending = False
            self.notify(info, "Normal", "Resized", f"{wanted} applied on {info.node}")
            await self._patch(
                info,
                {
                    "observedGeneration": info.generation,
                    "conditions": set_condition(
                        info.conditions, "ResourcesApplied", True, "Applied", wanted
                    ),
                },
            )

    # ----- migrations (driven by migrator.py) --------------------------------

    async def set_migrating(self, info: ProcessInfo, on: bool, reason: str, message: str) -> None:
        """The Migrating condition: True while a migration may have it frozen."""
        async with self._lock(info.key):
            await self._patch(
                info,
                {"conditions": set_condition(info.conditions, "Migrating", on, reason, message)},
            )

    async def move_to(self, info: ProcessInfo, node: str, process: pb.Process) -> None:
        """The migration's target confirmed a running restore: the process lives there now."""
        async with self._lock(info.key):
            info.node = node
            info.migrating_to = None
            status = status_from_agent(process, node, info.conditions)
            status["conditions"] = set_condition(
                status["conditions"], "Migrating", False, "Migrated", f"now on {node}"
            )
            await self._patch(info, status)
        self.notify(info, "Normal", "Migrated", f"running on {node}, pid {process.pid}")

    async def record_migration(self, info: ProcessInfo, entry: dict[str, Any]) -> None:
        async with self._lock(info.key):
            info.migrations = history(info.migrations, entry)
            await self.kube.patch_process_status(
                info.namespace, info.name, {"migrations": info.migrations}
            )

    # ----- deleting --------------------------------------------------------

    async def delete(self, body: Mapping[str, Any]) -> None:
        """Stop the process on its node; done when the agent confirms it is gone.
        Raises Retry while the agent is unreachable and the node not lost for good."""
        info = ProcessInfo.from_body(body)
        known = self.processes.get(info.key)
        node = known.node if known is not None and known.uid == info.uid else info.node
        if known is not None:
            known.deleting = True
        async with self._lock(info.key):
            agent = self.nodes.get(node) if node is not None else None
            if node is not None and agent is not None and agent.endpoint and not agent.lost:
                ref = pb.ProcessRef(namespace=info.namespace, name=info.name)
                try:
                    current = await self.pool.stub(node).GetProcess(
                        pb.GetProcessRequest(ref=ref), timeout=15
                    )
                    if current.spec.owner.uid == info.uid:
                        await self.pool.stub(node).StopProcess(
                            pb.StopProcessRequest(ref=ref), timeout=60
                        )
                except AgentUnavailable as exc:
                    raise Retry(str(exc)) from exc
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise Retry(f"agent on {node}: {exc.code().name}") from exc
        self.forget_process(info.key, info.uid)

    # ----- agents' reports -------------------------------------------------

    async def on_agent_sync(self, node: str, processes: list[pb.Process]) -> None:
        for process in processes:
            await self.on_agent_event(node, process)

    async def on_agent_event(self, node: str, process: pb.Process) -> None:
        if process.state in (pb.PROCESS_STATE_STOPPED, pb.PROCESS_STATE_FROZEN):
            return  # removed (or migrated away); frozen for a migration (the migrator reports)
        key = (process.spec.owner.namespace, process.spec.name)
        info = self.processes.get(key)
        if info is not None and info.migrating_to == node and info.node != node:
            return  # the migration's new copy: the migrator switches the status to it
        if info is None or info.uid != process.spec.owner.uid:
            if self.synced:
                self._spawn(self._stop_stray(node, process, "its ServerlessProcess is gone"))
            return
        # Under the process's lock: after an in-flight start's own status write, never
        # before it (a fast exit must not be overwritten by the older Running reply).
        async with self._lock(key):
            if self.processes.get(key) is not info or info.deleting:
                return
            if info.node is None:
                # Not placed in our books, yet there: a node back before its processes
                # were placed again, or an operator that died between StartProcess and
                # the status write. Adopt it rather than start a second copy.
                if process.state not in (pb.PROCESS_STATE_RUNNING, pb.PROCESS_STATE_BACKOFF):
                    return
                info.node = node
                log.info("adopted %s/%s running on %s", key[0], key[1], node)
            if info.node != node:
                self._spawn(self._stop_stray(node, process, f"it was placed again, on {info.node}"))
                return
            wanted = request_of(info.spec)
            held = process.spec.resources
            info.held_cpu = held.cpu_millis
            budgeted = self.cpu_share(info) is not None  # then its CPU is its budget's to set
            if held.memory_bytes != wanted.memory_bytes or (
                not budgeted and held.cpu_millis != wanted.cpu_millis
            ):
                info.resize_pending = True  # e.g. resized while the operator was down
            await self._apply_agent_state(info, node, process)

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
            await self.pool.stub(node).StopProcess(pb.StopProcessRequest(ref=ref), timeout=60)
        except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
            log.warning("could not stop stray %s on %s: %s", ref.name, node, exc)

    # ----- node loss and usage ---------------------------------------------

    async def check_nodes(self) -> list[ProcessInfo]:
        """Mark nodes whose agents stopped heartbeating; returns processes to place again."""
        now = time.monotonic()
        again = []
        for node in list(self.nodes.values()):
            if not node.endpoint:
                continue
            silent = now - node.seen > self.heartbeat_grace
            if silent and not node.lost:
                node.lost = True
                self._sync_ledger(node)
                log.warning("node %s lost: no heartbeat for %.0fs", node.name, now - node.seen)
                again += await self._evacuate(node.name)
            elif not silent and node.lost:
                node.lost = False
                self._sync_ledger(node)
                log.info("node %s is back; listing what its agent runs", node.name)
                # Its processes were placed elsewhere meanwhile: the fresh list makes
                # on_agent_event stop the copies it still runs (never two).
                self.pool.resync(node.name)
        return again

    async def _evacuate(self, node: str) -> list[ProcessInfo]:
        again = []
        message = f"node {node} stopped heartbeating for over {self.heartbeat_grace:.0f}s"
        for info in list(self.processes.values()):
            if info.node != node or not info.active:
                continue
            try:
                async with self._lock(info.key):  # not while a start to that node is in flight
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
        self.notify(info, "Warning", "NodeLost", message)
        if info.spec.get("restartPolicy", "Always") == "Never":
            await self._patch(
                info,
                {
                    "phase": "Failed",
                    "reason": "NodeLost",
                    "message": message,
                    "conditions": conditions,
                },
            )
            return False
        info.node = None
        await self._patch(
            info,
            {
                "phase": "Pending",
                "node": None,
                "pid": None,
                "reason": "NodeLost",
                "message": message,
                "conditions": conditions,
            },
        )
        return True

    async def poll_nodes(self) -> None:
        """Every agent's latest sample, all at once: the ledger's signals (placement and
        rebalancing), each process's figures (quotas), and status.usage."""
        await asyncio.gather(*(self._poll(node) for node in self.pool.nodes()))

    async def _poll(self, node: str) -> None:
        try:
            stats = await self.pool.stub(node).GetNodeStats(pb.GetNodeStatsRequest(), timeout=5)
        except (AgentUnavailable, grpc.aio.AioRpcError):
            return  # its signals age and turn stale: unknown, not idle
        now = time.monotonic()
        if node in self.ledger:
            self.ledger.report(node, signals_from(stats, now))
        for s in stats.processes:
            info = self.processes.get((s.ref.namespace, s.ref.name))
            if info is None or info.node != node or info.deleting:
                continue
            last = info.stats
            if last is not None and now > last.at:
                info.throttled_rate = max(
                    0.0, (s.cpu_throttled_seconds - last.throttled_seconds) / (now - last.at)
                )
            info.stats = Figures(
                s.cpu_usage_cores, s.cpu_throttled_seconds, s.memory_current_bytes, now
            )
            usage = {
                "cpu": f"{round(s.cpu_usage_cores * 1000)}m",
                "memory": format_bytes_approx(s.memory_current_bytes),
            }
            if _usage_moved(info.usage, usage):
                info.usage = usage
                await self.kube.patch_process_status(info.namespace, info.name, {"usage": usage})

    async def close(self) -> None:
        await self.pool.close()
