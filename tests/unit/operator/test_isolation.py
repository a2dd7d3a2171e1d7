"""One object the operator cannot handle never blocks or delays the others: every loop
over many objects, with a failure injected for one of them (a fault a real cluster
cannot be made to produce on demand; the Kubernetes API and agents are in-memory
stand-ins, fakes.py). Each failing object gets a condition and a Warning Event with
the reason and is retried with backoff; the others carry on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.conditions import find
from serverlessos_operator.api.v1alpha1 import ClusterCgroup, ProcessPhase
from serverlessos_operator.app import Operator
from serverlessos_operator.budgets.controller import ClusterCgroupController
from serverlessos_operator.config import OperatorConfig
from serverlessos_operator.infra.isolation import Backoff, Isolation
from serverlessos_operator.infra.refusals import Refusals
from serverlessos_operator.processes.book import Figures
from serverlessos_operator.processes.intake import ProcessIntake
from serverlessos_operator.processes.usage import UsagePoller
from serverlessos_operator.processes.waiting import WaitingProcesses
from serverlessos_operator.rebalancing.controller import RebalanceController
from serverlessos_operator.rebalancing.policy import RebalanceConfig, Rebalancer
from serverlessos_operator.scheduling.pressure import Signals

from .fakes import Events, admit, process, rpc_error, run
from .test_process_controllers import World, agent_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def isolation(clock: Clock) -> Isolation[Any]:
    return Isolation(Backoff(base=5.0, cap=60.0, clock=clock))


def test_a_process_whose_start_fails_is_reported_and_backed_off_while_others_start() -> None:
    w = World()
    clock = Clock()
    waiting = WaitingProcesses(w.book, w.starter, w.resizer, w.events, isolation(clock))
    good1, bad, good2 = admit(w.book, process("good1"), process("bad"), process("good2"))
    w.agents.agents["b"].fail["bad"] = RuntimeError("injected: the agent answered nonsense")
    run(waiting.retry)
    assert good1.phase == good2.phase == ProcessPhase.RUNNING
    synced = find(bad.conditions, "Synced")
    assert synced is not None and not synced.true and synced.reason == "ReconcileError"
    assert "answered nonsense" in synced.message and "retrying in 5s" in synced.message
    assert "ReconcileError" in w.kube.reasons("bad")
    assert w.kube.process_status("bad")["conditions"][-1]["status"] == "False"
    # Backed off: the next passes leave it alone until its delay is over...
    run(waiting.retry)
    assert w.kube.log.count("start bad on b") == 1
    clock.now += 5
    run(waiting.retry)
    assert w.kube.log.count("start bad on b") == 2
    synced = find(bad.conditions, "Synced")
    assert synced is not None and "retrying in 10s" in synced.message  # doubled
    # ...and once the fault is gone it starts, and the condition says so.
    del w.agents.agents["b"].fail["bad"]
    clock.now += 10
    run(waiting.retry)
    assert bad.phase == ProcessPhase.RUNNING
    synced = find(bad.conditions, "Synced")
    assert synced is not None and synced.true


def test_a_process_every_node_refuses_is_retried_with_backoff_not_forever() -> None:
    """An agent's refusal (a limit no node takes, say) places the process again, but
    as a failure: said in its status and Events, and backed off."""
    w = World()
    clock = Clock()
    waiting = WaitingProcesses(w.book, w.starter, w.resizer, w.events, isolation(clock))
    for node in ("a", "b"):
        w.agents.agents[node].refuse["web"] = rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, "argv and environment are 300000 bytes together"
        )
    (info,) = admit(w.book, process("web"))
    run(waiting.retry)
    status = w.kube.process_status("web")
    assert status["phase"] == "Pending" and status["reason"] == "NodeRefused"
    synced = find(info.conditions, "Synced")
    assert synced is not None and synced.reason == "NodeRefused" and not synced.true
    assert "300000 bytes" in synced.message and "retrying in 5s" in synced.message
    assert w.kube.reasons("web") == ["Scheduled", "NodeRefused"]
    starts = w.kube.log.count("start web on b")
    for _ in range(3):
        run(waiting.retry)  # backed off: not tried again before its time
    assert w.kube.log.count("start web on b") == starts
    clock.now += 5
    run(waiting.retry)
    assert w.kube.log.count("start web on b") + w.kube.log.count("start web on a") == starts + 1
    assert "retrying in 10s" in find(info.conditions, "Synced").message  # type: ignore[union-attr]


def test_a_budget_that_cannot_be_enforced_is_reported_and_the_others_are_enforced() -> None:
    w = World(budgets=True)
    assert w.budgets is not None
    clock = Clock()
    for team in ("a", "b"):
        w.budgets.upsert(
            ClusterCgroup.model_validate(
                {
                    "metadata": {"namespace": "ns", "name": f"team-{team}", "uid": f"c-{team}"},
                    "spec": {"cpu": "500m", "selector": {"matchLabels": {"team": team}}},
                }
            )
        )
    ma, mb = admit(
        w.book,
        process("member-a", labels={"team": "a"}),
        process("member-b", labels={"team": "b"}),
    )
    for info in (ma, mb):
        run(lambda info=info: w.starter.ensure(info))
    controller = ClusterCgroupController(
        w.budgets, w.book, w.agents, w.kube, w.events, isolation=isolation(clock)
    )
    w.agents.agents["b"].fail["member-a"] = RuntimeError("injected: lease refused oddly")
    run(controller.step)
    a = w.kube.status[("cgroups", "ns", "team-a")]
    b = w.kube.status[("cgroups", "ns", "team-b")]
    assert (
        a["conditions"][0]["status"] == "False" and "lease refused" in a["conditions"][0]["message"]
    )
    assert "EnforceFailed" in w.kube.reasons("team-a")
    assert b["conditions"][0]["status"] == "True" and b["memberCount"] == 1
    writes = len(w.kube.writes)
    run(controller.step)  # team-a waits out its backoff; team-b is renewed as usual
    assert w.agents.agents["b"].updates[-1].ref.name == "member-b"
    clock.now += 5
    del w.agents.agents["b"].fail["member-a"]
    run(controller.step)
    a = w.kube.status[("cgroups", "ns", "team-a")]
    assert a["conditions"][0]["status"] == "True" and len(w.kube.writes) > writes


def test_an_agent_whose_answer_cannot_be_used_is_reported_and_the_others_are_polled() -> None:
    w = World()
    clock = Clock()
    (info,) = admit(w.book, process("web"))
    run(lambda: w.starter.ensure(info))
    stats = w.agents.agents["b"].stats
    stats.time.FromSeconds(int(time.time()))
    stats.cpu_usage_cores = 0.25
    stats.processes.add(
        ref=pb.ProcessRef(namespace="ns", name="web"),
        cpu_usage_cores=0.25,
        memory_current_bytes=64 * 2**20,
    )
    w.agents.agents["a"].fail["*stats"] = RuntimeError("injected: a malformed sample")
    poller = UsagePoller(w.book, w.agents, w.events, isolation(clock))  # type: ignore[arg-type]
    run(poller.poll)
    assert info.stats is not None and info.stats.cores == 0.25
    assert w.kube.process_status("web")["usage"] == {"cpu": "250m", "memory": "64Mi"}
    assert w.book.ledger.get("b").signals.cpu_used_millis == 250  # type: ignore[union-attr]
    assert "PollFailed" in w.kube.reasons("a")
    calls = []
    w.agents.agents["a"].fail["*stats"] = RuntimeError("still broken")
    original = w.agents.agents["a"].GetNodeStats

    async def counting(request: Any, timeout: float) -> Any:
        calls.append(1)
        return await original(request, timeout)

    w.agents.agents["a"].GetNodeStats = counting  # type: ignore[method-assign]
    run(poller.poll)
    assert calls == []  # backed off
    clock.now += 5
    run(poller.poll)
    assert calls == [1]


def test_a_move_that_cannot_be_created_is_reported_and_the_other_moves_are_made() -> None:
    w = World()
    clock = Clock()
    criu = {"criu": {"usable": True, "features": ["lazy-pages"]}}
    for node, used in (("hot1", 3800), ("hot2", 3800), ("cold", 200)):
        w.nodes.upsert_agent(node, agent_status(f"{node}:7420", capabilities=criu))
        w.book.ledger.report(node, Signals(at=time.monotonic(), cpu_used_millis=used))
    spec = {"command": ["x"], "migration": {"policy": "Auto"}}
    p1, p2 = admit(w.book, process("p1", spec=spec), process("p2", spec=spec))
    for info, node in ((p1, "hot1"), (p2, "hot2")):
        info.node, info.phase = node, ProcessPhase.RUNNING
        info.stats = Figures(cores=1.0, throttled_seconds=0.0, memory_bytes=2**20, at=0.0)
    w.kube.fail_create.add("p1")
    controller = RebalanceController(
        w.book,
        w.nodes,
        Rebalancer(RebalanceConfig(hot_intervals=1)),
        w.kube,
        w.events,
        isolation=isolation(clock),
    )
    run(controller.step)
    assert [c["spec"]["process"] for c in w.kube.created] == ["p2"]
    assert "RebalancingFailed" in w.kube.reasons("p1")
    assert all(m.key != p1.key for m in controller.movable(time.monotonic()))  # backed off


def test_startup_lists_each_object_on_its_own() -> None:
    """An operator must start whatever it finds: one unusable object of each kind is
    reported, and everything else is taken in."""
    w = World()
    good = process("good").model_dump(by_alias=True, mode="json")
    bad = {
        "metadata": {"namespace": "ns", "name": "bad", "uid": "u-bad", "generation": 1},
        "spec": {"command": ["x"], "resources": {"cpu": "lots"}},
    }
    # Fixed since an earlier operator refused it; clearing its condition fails here.
    fixed = process(
        "fixed",
        status={
            "conditions": [
                {
                    "type": "Synced",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    ).model_dump(by_alias=True, mode="json")
    w.kube.fail_status.add(("ns", "fixed"))
    w.kube.lists = {
        "processes": [bad, fixed, good],
        "cgroups": [
            {
                "metadata": {"namespace": "ns", "name": "broken", "uid": "c1"},
                "spec": {"cpu": "a lot"},
            }
        ],
        "nodes": [{"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "many"}}}],
    }
    config = OperatorConfig(metrics_port=0, manage_daemonset=False, rebalancing_enabled=False)

    async def scenario() -> Operator:
        operator = Operator(config, w.kube)  # type: ignore[arg-type]
        await operator.start()
        for _ in range(20):
            await asyncio.sleep(0)
        await operator.close()
        return operator

    operator = run(scenario)
    assert operator.processes.get(("ns", "good")) is not None
    assert operator.processes.get(("ns", "bad")) is None
    bad_status = w.kube.process_status("bad")
    assert bad_status["phase"] == "Pending" and bad_status["reason"] == "InvalidSpec"
    assert "spec.resources.cpu: 'lots' is not a quantity" in bad_status["message"]
    assert "InvalidSpec" in w.kube.reasons("bad")
    assert w.kube.status[("cgroups", "ns", "broken")]["conditions"][0]["reason"] == "InvalidSpec"
    assert "InvalidSpec" in w.kube.reasons("n1")
    assert "ReconcileError" in w.kube.reasons("fixed")  # its own failure, reported on it
    assert operator.nodes.get("n1") is None


def test_a_refused_process_is_admitted_once_it_is_fixed() -> None:
    w = World()
    intake = ProcessIntake(w.book, Refusals(w.kube, Events(w.kube)))
    bad = {
        "metadata": {"namespace": "ns", "name": "p", "uid": "u", "generation": 1},
        "spec": {"command": ["x"], "resources": {"memory": "12 Mi"}},
    }
    assert run(lambda: intake.admit(bad)) is None
    assert run(lambda: intake.admit(bad)) is None
    assert w.kube.reasons("p") == ["InvalidSpec"]  # once per distinct problem
    fixed = {
        **bad,
        "metadata": {**bad["metadata"], "generation": 2},
        "spec": {"command": ["x"], "resources": {"memory": "12Mi"}},
        "status": w.kube.process_status("p"),
    }
    info = run(lambda: intake.admit(fixed))
    assert info is not None and info.waiting
    synced = find(info.conditions, "Synced")
    assert synced is not None and synced.true
