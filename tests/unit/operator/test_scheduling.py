"""Backpressure placement, rebalancing and the ClusterCgroup quota split, called directly."""

from __future__ import annotations

import pytest
from serverlessos_operator.rebalancing.policy import Movable, RebalanceConfig, Rebalancer
from serverlessos_operator.scheduling.constraints import Request, Taint, Toleration
from serverlessos_operator.scheduling.ledger import Ledger
from serverlessos_operator.scheduling.placement import Backpressure
from serverlessos_operator.scheduling.pressure import PressureModel, Signals

GIB = 2**30


KWOK_TAINT = Taint("kwok.x-k8s.io/node", "fake", "NoSchedule")


TOLERATE_KWOK = Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")


def book(*names: str, cpu: int = 4000, mem: int = 8 * GIB, now: float = 100.0) -> Ledger:
    ledger = Ledger()
    for name in names:
        node = ledger.node(name)
        node.cpu_millis, node.memory_bytes, node.ready = cpu, mem, True
        ledger.report(name, Signals(at=now))
    return ledger


def test_pressure_is_the_most_stressed_resource() -> None:
    model = PressureModel()
    s = Signals(at=0, cpu_used_millis=2000, memory_used_bytes=GIB, cpu_psi=5.0, io_psi=30.0)
    assert model.pressure(s, 4000, 8 * GIB) == pytest.approx(55.0)  # cpu 50 % + 5 % stall
    assert model.pressure(s, 4000, 8 * GIB, extra_cpu_millis=-2000) == pytest.approx(30.0)  # io
    net = Signals(at=0, network_bytes_per_second=90e6, network_capacity_bytes_per_second=100e6)
    assert model.pressure(net, 4000, 8 * GIB) == pytest.approx(90.0)


def test_prefers_the_node_with_least_pressure_not_least_requests() -> None:
    ledger = book("busy", "calm", "stalled")
    ledger.report("busy", Signals(at=100, cpu_used_millis=3500))
    ledger.report("stalled", Signals(at=100, cpu_psi=60.0))
    ledger.node("calm").reserved_cpu_millis = 3000  # asked a lot, uses nothing
    decision = Backpressure().place(Request(500, 2**28), ledger, now=101)
    assert decision.node == "calm"
    assert decision.reason.startswith("least pressure (12%) of 3 fitting nodes")


def test_filters_explain_why_nothing_fits() -> None:
    ledger = book("a", "b")
    ledger.node("b").ready = False
    d = Backpressure().place(Request(64000, 2**28), ledger, now=101)
    assert d.node is None
    assert d.reason == "0/2 nodes fit: 1 insufficient cpu, 1 not ready"
    assert Backpressure().place(Request(1, 1), Ledger(), 0).reason == (
        "no nodes with a ServerlessOS agent"
    )


def test_node_selector_and_taints() -> None:
    ledger = book("kwok", "plain")
    ledger.node("kwok").labels, ledger.node("kwok").taints = {"type": "kwok"}, (KWOK_TAINT,)
    ledger.node("plain").labels = {"type": "metal"}
    req = Request(100, 2**20, node_selector={"type": "kwok"})
    assert (
        Backpressure()
        .place(req, ledger, 101)
        .reason.endswith(
            "1 node selector type=kwok, 1 untolerated taint kwok.x-k8s.io/node=fake:NoSchedule"
        )
    )
    ok = Request(100, 2**20, node_selector={"type": "kwok"}, tolerations=(TOLERATE_KWOK,))
    assert Backpressure().place(ok, ledger, 101).node == "kwok"


def test_a_burst_spreads_before_any_report_shows_it() -> None:
    """All nodes report idle; what was placed since counts, so the burst spreads."""
    ledger, placer, placed = book("a", "b", "c"), Backpressure(), []
    for _ in range(9):
        choice = placer.place(Request(500, 2**20), ledger, now=101).node
        assert choice is not None
        ledger.reserve(choice, 500, 2**20, now=101)
        placed.append(choice)
    assert sorted(placed.count(n) for n in "abc") == [3, 3, 3]


def test_pending_load_counts_until_a_later_report_includes_it() -> None:
    ledger = book("a", now=100)
    ledger.reserve("a", 1000, 0, now=101)
    a = ledger.node("a")
    assert ledger.pressure(a, 102) == pytest.approx(25.0)  # the report predates it
    ledger.report("a", Signals(at=110, cpu_used_millis=1000))  # settled: the report has it
    assert ledger.pressure(a, 110) == pytest.approx(25.0)  # counted once, not twice


def test_stale_nodes_are_unknown_not_idle() -> None:
    ledger = book("fresh", "stale", now=100)
    ledger.report("fresh", Signals(at=100, cpu_used_millis=3000))
    ledger.report("stale", Signals(at=50))  # idle 50 s ago: unknown now
    assert ledger.pressure(ledger.node("stale"), 100) is None
    assert Backpressure().place(Request(100, 1), ledger, 100).node == "fresh"
    ledger.node("fresh").reserved_cpu_millis = 4000  # full: only the stale one fits
    d = Backpressure().place(Request(100, 1), ledger, 100)
    assert d.node == "stale" and "stale" in d.reason


def test_sampling_keeps_a_decision_cheap_and_still_finds_rare_fits() -> None:
    ledger = book(*(f"n{i}" for i in range(5000)))
    ledger.node("n4321").labels = {"gpu": "yes"}
    placer = Backpressure(seed=1)
    d = placer.place(Request(100, 1, node_selector={"gpu": "yes"}), ledger, 101)
    assert d.node == "n4321"  # sampling found none: a full scan did
    d = placer.place(Request(100, 1), ledger, 101)
    assert d.node is not None and "4 sampled" in d.reason


def test_exclude() -> None:
    ledger = book("a", "b")
    ledger.report("b", Signals(at=100, cpu_used_millis=3000))
    assert Backpressure().place(Request(1, 1), ledger, 101, exclude={"a"}).node == "b"


def movable(name: str, node: str, cpu: float = 1000, mem: float = 2**28) -> Movable:
    return Movable(("ns", name), node, Request(100, 2**20), cpu, mem)


def skewed(now: float) -> Ledger:
    ledger = book("hot", "cool", "warm", now=now)
    ledger.report("hot", Signals(at=now, cpu_used_millis=3800))  # 95 %
    ledger.report("warm", Signals(at=now, cpu_used_millis=2400))  # 60 %: not a receiver
    return ledger


def test_sheds_only_after_k_hot_intervals_and_toward_a_cool_node() -> None:
    rebalancer = Rebalancer(RebalanceConfig(hot_intervals=3))
    procs = [movable("p1", "hot", 1500), movable("p2", "hot", 1000)]
    for t in (0, 10):
        assert rebalancer.step(skewed(t), t, procs, {}).moves == []
    plan = rebalancer.step(skewed(20), 20, procs, {})
    assert [(m.key[1], m.source, m.target) for m in plan.moves] == [("p1", "hot", "cool")]
    assert "hot at 95% > 80% for 3 intervals" in plan.moves[0].reason


def test_a_spike_shorter_than_k_intervals_moves_nothing() -> None:
    rebalancer = Rebalancer(RebalanceConfig(hot_intervals=3))
    procs = [movable("p1", "hot")]
    for t in range(0, 200, 10):
        ledger = skewed(t) if (t // 10) % 3 != 2 else book("hot", "cool", "warm", now=t)
        assert rebalancer.step(ledger, t, procs, {}).moves == []


def test_no_oscillation_under_steady_skewed_load() -> None:
    """A world where moves take effect: every process moves at most once, never back."""
    rebalancer = Rebalancer(RebalanceConfig(hot_intervals=2, cooldown=600))
    use = {f"p{i}": 700.0 for i in range(5)}  # 3.5 cores on one 4-core node
    where = dict.fromkeys(use, "a")
    history: list[tuple[str, str, str]] = []
    for step in range(100):
        now = step * 10.0
        ledger = book("a", "b", "c", now=now)
        for node in "abc":
            used = sum(u for p, u in use.items() if where[p] == node) + 200  # + a steady daemon
            ledger.report(node, Signals(at=now, cpu_used_millis=used))
        procs = [movable(p, where[p], use[p]) for p in use]
        for move in rebalancer.step(ledger, now, procs, {}).moves:
            history.append((move.key[1], move.source, move.target))
            where[move.key[1]] = move.target
    assert history, "the skew was never addressed"
    moved = [p for p, _, _ in history]
    assert len(moved) == len(set(moved)), f"a process moved twice: {history}"
    assert max(sum(use[p] for p in use if where[p] == n) for n in "abc") < 3200


def test_limits_per_node_rate_and_cost() -> None:
    procs = [movable(f"p{i}", "hot", 300) for i in range(6)]
    cfg = RebalanceConfig(hot_intervals=1, max_per_node=2, burst=10)
    plan = Rebalancer(cfg).step(skewed(0), 0, procs, {"hot": 1})
    assert len(plan.moves) == 1  # one slot left on the source
    plan = Rebalancer(cfg).step(skewed(0), 0, procs, {"hot": 2})
    assert plan.moves == [] and plan.notes[0].outcome == "busy"
    limited = Rebalancer(RebalanceConfig(hot_intervals=1, burst=1, rate_per_minute=1))
    assert len(limited.step(skewed(0), 0, procs, {}).moves) == 1
    plan = limited.step(skewed(10), 10, [movable("x", "hot", 300)], {})
    assert plan.moves == []  # hot again only after K intervals; then the bucket is empty
    plan = limited.step(skewed(20), 20, [movable("x", "hot", 300)], {})
    assert plan.moves == [] and plan.notes[-1].outcome == "rate-limited"
    costly = Rebalancer(RebalanceConfig(hot_intervals=1, cost_per_gib=100))
    plan = costly.step(skewed(0), 0, [movable("big", "hot", 300, 2 * GIB)], {})
    assert plan.moves == [] and plan.notes[0].outcome == "not-worth"


def test_cooldown_is_remembered_across_restarts() -> None:
    rebalancer = Rebalancer(RebalanceConfig(hot_intervals=1, cooldown=600))
    rebalancer.remember(("ns", "p1"), at=-100)  # e.g. from status.migrations
    plan = rebalancer.step(skewed(0), 0, [movable("p1", "hot")], {})
    assert plan.moves == [] and plan.notes[0].outcome == "nothing-movable"


def test_stale_and_unready_nodes_neither_shed_nor_receive() -> None:
    rebalancer = Rebalancer(RebalanceConfig(hot_intervals=1))
    ledger = skewed(0)
    ledger.report("cool", Signals(at=-100))  # stale: unknown, not idle
    assert rebalancer.step(ledger, 0, [movable("p1", "hot")], {}).notes[0].outcome == "no-target"
    ledger = skewed(0)
    ledger.report("hot", Signals(at=-100, cpu_used_millis=4000))
    assert rebalancer.step(ledger, 0, [movable("p1", "hot")], {}).notes == []


def test_bad_watermarks_are_refused() -> None:
    with pytest.raises(ValueError, match="lowWatermark"):
        RebalanceConfig(high_watermark=50, low_watermark=60)


def test_sampling_never_settles_for_a_stale_node_while_a_fresh_one_fits() -> None:
    ledger = book(*(f"n{i}" for i in range(1000)), now=100)
    for i in range(100, 1000):
        ledger.report(f"n{i}", Signals(at=0))  # stale
    for seed in range(50):
        decision = Backpressure(seed=seed).place(Request(100, 1), ledger, now=101)
        assert decision.node is not None and int(decision.node[1:]) < 100, (seed, decision)


def test_the_migration_budget_grows_with_the_cluster_and_burst_does_not_cap_it() -> None:
    cfg = RebalanceConfig(rate_per_minute=6, rate_per_100_nodes=2, burst=3, interval=10)
    rebalancer = Rebalancer(cfg)
    assert rebalancer.rate(100) == 6 and rebalancer.rate(5000) == 100
    fast = Rebalancer(RebalanceConfig(hot_intervals=1, rate_per_minute=600, burst=3))
    hot = [f"h{i}" for i in range(40)]
    ledger = book(*hot, *(f"c{i}" for i in range(40)), now=0)
    for name in hot:
        ledger.report(name, Signals(at=0, cpu_used_millis=3800))
    procs = [movable(f"p{i}", name, 300) for i, name in enumerate(hot)]
    fast.step(ledger, 0, procs, {})  # the first step spends the initial burst
    plan = fast.step(ledger, 10, procs, {})
    assert len(plan.moves) > 3  # 10 s at 600/min earns 100
