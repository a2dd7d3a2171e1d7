"""The pieces that run processes (processes/), called directly, without a cluster: the
Kubernetes API and the agents are in-memory stand-ins (fakes.py); e2e/ runs the same
paths against real ones."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.conditions import find
from serverlessos_operator.api.meta import now
from serverlessos_operator.api.v1alpha1 import ClusterCgroup, ProcessPhase, ServerlessNodeStatus
from serverlessos_operator.budgets.book import BudgetBook
from serverlessos_operator.nodes.book import NodeBook
from serverlessos_operator.processes.admission import NoBudgets
from serverlessos_operator.processes.agent_status import AgentStatus
from serverlessos_operator.processes.book import ProcessBook
from serverlessos_operator.processes.deleter import ProcessDeleter
from serverlessos_operator.processes.node_loss import NodeLoss
from serverlessos_operator.processes.reports import AgentReports
from serverlessos_operator.processes.resizer import ProcessResizer
from serverlessos_operator.processes.retry import Refused, Retry
from serverlessos_operator.processes.starter import ProcessStarter
from serverlessos_operator.scheduling.ledger import Ledger
from serverlessos_operator.scheduling.placement import Backpressure
from serverlessos_operator.scheduling.pressure import Signals

from .fakes import Events, FakeAgents, FakeKube, admit, process, rpc_error, run


def agent_status(endpoint: str, **extra: object) -> ServerlessNodeStatus:
    return ServerlessNodeStatus.model_validate(
        {
            **extra,
            "endpoint": endpoint,
            "allocatable": {"cpu": "4", "memory": "8Gi"},
            "lastHeartbeat": now(),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AgentReady",
                    "lastTransitionTime": now(),
                }
            ],
        }
    )


class World:
    """One operator's process controllers over fakes: nodes a (busy) and b (idle)."""

    def __init__(self, budgets: bool = False) -> None:
        self.kube = FakeKube()
        self.events = Events(self.kube)
        self.agents = FakeAgents(self.kube.log)
        ledger = Ledger()
        self.book = ProcessBook(self.kube, ledger)
        self.nodes = NodeBook(ledger, self.agents)  # type: ignore[arg-type]
        for node, used in (("a", 3000), ("b", 200)):
            self.nodes.upsert_agent(node, agent_status(f"{node}:7420"))
            ledger.report(node, Signals(at=time.monotonic(), cpu_used_millis=used))
        self.budgets = BudgetBook(self.book) if budgets else None
        policy = self.budgets or NoBudgets()
        self.placements: list[bool] = []
        self.starter = ProcessStarter(
            self.book,
            Backpressure(),
            self.agents,  # type: ignore[arg-type]
            self.events,
            budgets=policy,
            env_source=self.kube,
            on_placement=self.placements.append,
        )
        self.resizer = ProcessResizer(self.book, self.agents, self.events, policy)  # type: ignore[arg-type]
        self.reports = AgentReports(
            self.book,
            self.agents,
            AgentStatus(self.book, self.events),
            policy,  # type: ignore[arg-type]
        )


def test_a_process_is_placed_by_pressure_recorded_then_started() -> None:
    w = World()
    (info,) = admit(w.book, process("web"))
    run(lambda: w.starter.ensure(info))
    assert info.node == "b" and info.phase == ProcessPhase.RUNNING
    status = w.kube.process_status("web")
    assert status["node"] == "b" and status["phase"] == "Running" and status["pid"] == 100
    # Decide, record, act: the node is in the status before the agent is asked.
    placed = w.kube.log.index(
        "patch processes web ['conditions', 'message', 'node', "
        "'observedGeneration', 'phase', 'reason']"
    )
    assert placed < w.kube.log.index("start web on b")
    assert w.kube.reasons("web") == ["Scheduled", "Running"]
    assert w.placements == [True]
    assert w.book.ledger.get("b").reserved_cpu_millis == 100  # type: ignore[union-attr]


def test_a_second_ensure_starts_nothing_and_already_exists_is_success() -> None:
    w = World()
    (info,) = admit(w.book, process("web"))
    run(lambda: w.starter.ensure(info))
    run(lambda: w.starter.ensure(info))
    assert w.kube.log.count("start web on b") == 1
    # An operator that died after StartProcess: the agent has it; same owner: adopted.
    info.phase = ProcessPhase.SCHEDULED
    run(lambda: w.starter.ensure(info))
    assert info.phase == ProcessPhase.RUNNING and w.kube.log.count("start web on b") == 2


def test_an_older_process_of_that_name_on_the_node_is_waited_for() -> None:
    w = World()
    w.agents.agents["b"].processes[("ns", "web")] = pb.Process(
        spec=pb.ProcessSpec(name="web", owner=pb.Owner(namespace="ns", uid="old"))
    )
    (info,) = admit(w.book, process("web"))
    with pytest.raises(Retry, match="older process named web"):
        run(lambda: w.starter.ensure(info))


def test_unschedulable_says_why_once_and_retries() -> None:
    w = World()
    (info,) = admit(w.book, process("big", spec={"command": ["x"], "resources": {"cpu": "64"}}))
    for _ in range(2):
        with pytest.raises(Retry, match="insufficient cpu"):
            run(lambda: w.starter.ensure(info))
    status = w.kube.process_status("big")
    assert status["phase"] == "Unschedulable" and "2 insufficient cpu" in status["message"]
    assert w.kube.reasons("big") == ["FailedScheduling"]  # not once per retry
    assert w.placements == [False, False]


def test_a_node_that_refuses_the_process_sends_it_elsewhere() -> None:
    w = World()
    w.agents.agents["b"].refuse["web"] = rpc_error(
        grpc.StatusCode.FAILED_PRECONDITION, "the agent lacks CAP_SYS_ADMIN"
    )
    (info,) = admit(w.book, process("web"))
    with pytest.raises(Refused, match="node b refused the process"):
        run(lambda: w.starter.ensure(info))
    assert info.node is None and w.kube.process_status("web")["reason"] == "NodeRefused"


def test_an_unreachable_agent_is_retried_not_failed() -> None:
    w = World()
    w.agents.unreachable.add("b")
    (info,) = admit(w.book, process("web"))
    with pytest.raises(Retry, match="no agent endpoint"):
        run(lambda: w.starter.ensure(info))
    assert info.node == "b" and info.phase == ProcessPhase.SCHEDULED  # recorded, to resume


def test_a_member_waits_for_its_memory_budget() -> None:
    w = World(budgets=True)
    assert w.budgets is not None
    w.budgets.upsert(
        ClusterCgroup.model_validate(
            {
                "metadata": {"namespace": "ns", "name": "team", "uid": "c1"},
                "spec": {"cpu": "1", "memory": "192Mi", "selector": {"matchLabels": {"t": "a"}}},
            }
        )
    )
    spec = {"command": ["x"], "resources": {"cpu": "100m", "memory": "128Mi"}}
    one, two = admit(
        w.book,
        process("one", spec=spec, labels={"t": "a"}),
        process("two", spec=spec, labels={"t": "a"}),
    )
    run(lambda: w.starter.ensure(one))
    with pytest.raises(Retry, match="memory budget"):
        run(lambda: w.starter.ensure(two))
    status = w.kube.process_status("two")
    assert status["phase"] == "Pending" and status["reason"] == "MemoryBudgetExceeded"
    admitted = find(two.conditions, "Admitted")
    assert admitted is not None and not admitted.true
    # The first one started under its budget's lease, with the share the others leave.
    started = w.agents.agents["b"].processes[("ns", "one")]
    assert started.spec.resources.cpu_millis == 100 and started.lease.seconds == 10


def test_resizes_are_applied_or_refused_with_the_reason() -> None:
    w = World()
    (info,) = admit(w.book, process("web"))
    run(lambda: w.starter.ensure(info))
    bigger = process("web", spec={"command": ["sleep", "1000"], "resources": {"cpu": "200m"}})
    bigger.metadata.generation = 2
    w.book.upsert(bigger)
    assert info.resize_pending
    run(lambda: w.resizer.apply(info.key))
    assert w.agents.agents["b"].updates[-1].resources.cpu_millis == 200
    applied = find(info.conditions, "ResourcesApplied")
    assert applied is not None and applied.true and not info.resize_pending
    w.agents.agents["b"].refuse["web"] = rpc_error(
        grpc.StatusCode.FAILED_PRECONDITION, "memory limit is below what it uses"
    )
    smaller = process("web", spec={"command": ["sleep", "1000"], "resources": {"memory": "4Mi"}})
    smaller.metadata.generation = 3
    w.book.upsert(smaller)
    run(lambda: w.resizer.apply(info.key))
    refused = find(info.conditions, "ResourcesApplied")
    assert refused is not None and not refused.true and "below what it uses" in refused.message
    assert "ResizeRefused" in w.kube.reasons("web")


def test_deleting_stops_it_on_its_node_and_waits_while_the_agent_is_unreachable() -> None:
    w = World()
    deleter = ProcessDeleter(w.book, w.nodes, w.agents)  # type: ignore[arg-type]
    (info,) = admit(w.book, process("web"))
    run(lambda: w.starter.ensure(info))
    w.agents.unreachable.add("b")
    with pytest.raises(Retry):
        run(lambda: deleter.delete(info.key, info.uid, "b"))
    assert w.book.get(info.key) is info and info.deleting
    w.agents.unreachable.clear()
    run(lambda: deleter.delete(info.key, info.uid, "b"))
    assert "stop web on b" in w.kube.log and w.book.get(info.key) is None
    assert w.book.ledger.get("b").reserved_cpu_millis == 0  # type: ignore[union-attr]


def test_agents_reports_stop_strays_adopt_orphans_and_notice_resizes() -> None:
    w = World()
    w.book.synced = True
    (info,) = admit(w.book, process("web"))
    spec = pb.ProcessSpec(name="web", owner=pb.Owner(namespace="ns", uid=info.uid))
    spec.resources.cpu_millis, spec.resources.memory_bytes = 100, 128 * 2**20
    running = pb.Process(spec=spec, state=pb.PROCESS_STATE_RUNNING, pid=7)

    async def scenario() -> None:
        # Not placed in the books, yet it runs on a: adopted, not started a second time.
        await w.reports.on_event("a", running)
        assert info.node == "a" and info.phase == ProcessPhase.RUNNING
        assert not info.resize_pending
        # The same process reported by another node: that copy is a stray, stopped.
        w.agents.agents["b"].processes[("ns", "web")] = running
        await w.reports.on_event("b", running)
        # A process no ServerlessProcess owns any more: stopped too.
        ghost = pb.ProcessSpec(name="ghost", owner=pb.Owner(namespace="ns", uid="gone"))
        w.agents.agents["a"].processes[("ns", "ghost")] = pb.Process(spec=ghost)
        await w.reports.on_event("a", pb.Process(spec=ghost, state=pb.PROCESS_STATE_RUNNING))
        for _ in range(5):
            await asyncio.sleep(0)  # the stops run beside the agent's stream
        # Held limits other than the spec's (resized while the operator was down).
        running.spec.resources.cpu_millis = 300
        await w.reports.on_event("a", running)

    run(scenario)
    assert "stop web on b" in w.kube.log and "stop ghost on a" in w.kube.log
    assert "start web on a" not in w.kube.log
    assert info.resize_pending


def test_a_lost_node_sends_its_processes_elsewhere_and_never_policy_fails() -> None:
    w = World()
    loss = NodeLoss(w.book, w.nodes, w.agents, w.events, heartbeat_grace=30)  # type: ignore[arg-type]
    once = process("once", spec={"command": ["x"], "restartPolicy": "Never"})
    web, job = admit(w.book, process("web"), once)
    for info in (web, job):
        run(lambda info=info: w.starter.ensure(info))
    assert web.node == job.node == "b"
    w.nodes.get("a").seen = w.nodes.get("b").seen = 0.0  # type: ignore[union-attr]
    again = run(loss.check)
    assert again == [web] and web.node is None and web.phase == ProcessPhase.PENDING
    assert (
        job.phase == ProcessPhase.FAILED and w.kube.process_status("once")["reason"] == "NodeLost"
    )
    assert w.nodes.get("b").lost and not w.book.ledger.get("b").ready  # type: ignore[union-attr]
    w.nodes.get("b").seen = time.monotonic()  # type: ignore[union-attr]
    run(loss.check)
    assert not w.nodes.get("b").lost and w.agents.resynced == ["b"]  # type: ignore[union-attr]
    assert w.book.ledger.get("b").ready  # type: ignore[union-attr]


def test_valuefrom_variables_are_read_when_it_starts_and_never_written_anywhere() -> None:
    w = World()
    spec = {
        "command": ["x"],
        "env": [
            {"name": "PLAIN", "value": "p"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {
                "name": "EXTRA",
                "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": True}},
            },
        ],
    }
    (info,) = admit(w.book, process("app", spec=spec))
    w.kube.config_maps[("ns", "cfg")] = {"mode": b"fast"}
    # The Secret is missing: it waits, says for what (never a value), holds no node.
    for _ in range(2):
        with pytest.raises(Retry, match="TOKEN waits for Secret 'creds'"):
            run(lambda: w.starter.ensure(info))
    assert info.node is None and w.kube.process_status("app")["reason"] == "SecretNotFound"
    assert w.kube.reasons("app") == ["SecretNotFound"]  # once, not per retry
    w.kube.secrets[("ns", "creds")] = {"token": b"t0p-s3cret"}
    run(lambda: w.starter.ensure(info))
    started = w.agents.agents[info.node].processes[("ns", "app")]  # type: ignore[index]
    assert dict(started.spec.env) == {"PLAIN": "p", "TOKEN": "t0p-s3cret", "MODE": "fast"}
    written = repr(w.kube.writes) + repr(w.kube.events)
    assert "t0p-s3cret" not in written and "fast" not in written
