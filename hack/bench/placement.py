"""Placement benchmark: the real placement and rebalancing code at scale, against baselines.

    make bench-placement    (or: .venv/bin/python hack/bench/placement.py
        [--nodes 5000] [--processes 50000] [--duration 3600] [--seed 1]
        [--policies random,...] [--rebalance rate_per_minute=60,burst=10,...])

A simulator in simulated time (1 s steps) drives `Backpressure` (placement.py),
`Rebalancer` (rebalance.py) and the `Ledger` they read (ledger.py) exactly as the
operator calls them, and beside them, in the same run, on the same seeded stream of
arrivals, departures and demand changes, four baselines behind the same `Placer`
interface and the same `misfit` filters:

    random           a random fitting node
    round-robin      the next fitting node
    least-loaded     least pressure by reported usage, as a scheduler caching node
                     metrics sees it: a snapshot refreshed every 30 s, of reports
                     already 30 s old (so 30-65 s old), not counting what it placed since
    least-allocated  kube-scheduler's default scoring (v1.34): NodeResourcesFit
                     LeastAllocated + NodeResourcesBalancedAllocation on requests,
                     among the first max(100, n * (50 - n/125)%) feasible nodes from a
                     rotating start (percentageOfNodesToScore), random among ties

and ours in three rows: `backpressure` (placement alone), `backpressure+rebalancer`
(with the Rebalancer stepping every interval, RebalanceConfig's defaults or
--rebalance), and the same with the cluster-wide migration budget scaled to the
cluster (one per minute per 50 nodes; the defaults allow 6 per minute in all).
Each policy has its own copy of the world and its own Ledger, kept as the operator
keeps it: a placement reserves its request (counted as pending load until a report
shows it), a departure releases it, a finished migration releases it on the source
and reserves it on the target without pending (the rebalancer already expected the
move on both nodes). The rebalancer is offered every Auto process placed and not
moving, with its current use.

The world, the same for every policy:
  - nodes of 4/8/16/32 cores (30/35/25/10 %), 4 GiB per core +-25 %;
  - processes arrive (Poisson) until --processes are live: first over --fill seconds,
    then at the rate that keeps that many live; lifetimes are exponential in three
    classes (short jobs 2 min, batch 20 min, services 4 h; the first cohort's are drawn
    from the residual-life distribution, so the population is steady from the start);
  - demand is heavy-tailed (CPU log-normal, median 280 millicores, sigma 1.2, capped at
    8 cores; memory log-normal, median 1 GiB, sigma 1, capped at 24 GiB), and requests
    are wrong: request = use x a log-uniform factor in 0.3-3, for CPU and memory each;
  - 40 % of processes change their use in phases (every 5 min on average, a mean-one
    log-normal factor of their base use), so load skews after placement;
  - 50 % are migration policy Auto (the only ones the rebalancer may move); a move
    takes 2 s + 1 s per GiB, then the process's use leaves the source for the target;
  - a node's true usage is the sum of its processes' use; its PSI grows once CPU
    passes 70 % (50 % stall at 100 %, capped at 100) or memory passes 85 %; its agent
    reports every 5 s (staggered) into the policy's own Ledger: utilisation as it is,
    PSI as avg10 (a 10 s moving average, so stalls show late and fade late).

Measured: decision latency (wall time of each real `place()` call), load imbalance =
coefficient of variation of the *true* node pressure (the same PressureModel on true
usage, not reports) sampled every 30 s after warm-up, unschedulable decisions, and
for the rebalancer: migrations per process placed, oscillations (a process moved back
to a node it left within the cooldown, from this file's own move history) and step
latency. Policies run one after another (not in parallel), so latencies are not
disturbed by each other. Baselines are Python re-implementations: their latencies are
shown for reference, the 1 ms target is for ours.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace

import benchlib  # type: ignore[import-not-found]  # hack/bench/, beside this script
from serverlessos_operator.rebalancing.policy import Movable, RebalanceConfig, Rebalancer
from serverlessos_operator.scheduling.constraints import Request
from serverlessos_operator.scheduling.ledger import Ledger, NodeState
from serverlessos_operator.scheduling.placement import Backpressure, Decision, Placer, misfit
from serverlessos_operator.scheduling.pressure import PressureModel, Signals

GIB = 2**30
MIB = 2**20
REPORT_EVERY = 5  # seconds between an agent's reports
AVG10_DECAY = math.exp(-REPORT_EVERY / 10)  # PSI avg10 over one report interval
RETRY_EVERY = 10  # seconds between placement attempts of an unschedulable process
SAMPLE_EVERY = 30  # seconds between imbalance samples
LIFETIMES = ((0.50, 120.0), (0.35, 1200.0), (0.15, 14400.0))  # (share of arrivals, mean s)
PHASED, PHASE_MEAN = 0.4, 300.0
AUTO = 0.5


def machine() -> str:
    return str(benchlib.machine())


def pct(values: list[float], q: float) -> float:
    return float(benchlib.pct(values, q)) if values else math.nan


# ----- the stream: the same for every policy ---------------------------------


@dataclass
class Workload:
    names: list[str]
    cpu_cap: list[int]
    mem_cap: list[int]
    request: list[Request] = field(default_factory=list)  # per process
    cpu: list[float] = field(default_factory=list)  # use when it arrives
    mem: list[float] = field(default_factory=list)
    auto: list[bool] = field(default_factory=list)
    arrivals: list[list[int]] = field(default_factory=list)  # per second: processes
    departures: list[list[int]] = field(default_factory=list)
    phases: list[list[tuple[int, float, float]]] = field(default_factory=list)


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def generate(nodes: int, processes: int, duration: int, fill: int, seed: int) -> Workload:
    rng = random.Random(seed)
    cores = rng.choices((4, 8, 16, 32), weights=(30, 35, 25, 10), k=nodes)
    w = Workload(
        names=[f"node-{i:05d}" for i in range(nodes)],
        cpu_cap=[c * 1000 for c in cores],
        mem_cap=[int(c * 4 * GIB * rng.uniform(0.75, 1.25)) // MIB * MIB for c in cores],
        arrivals=[[] for _ in range(duration)],
        departures=[[] for _ in range(duration)],
        phases=[[] for _ in range(duration)],
    )
    mean_life = sum(p * m for p, m in LIFETIMES)
    residual = [p * m / mean_life for p, m in LIFETIMES]  # lifetime classes of the live

    def add(at: int, weights: list[float]) -> None:
        pid = len(w.cpu)
        life = rng.expovariate(1 / rng.choices(LIFETIMES, weights=weights)[0][1])
        cpu = min(8000.0, rng.lognormvariate(math.log(280), 1.2))
        mem = min(24.0 * GIB, rng.lognormvariate(math.log(GIB), 1.0))
        w.cpu.append(cpu)
        w.mem.append(mem)
        w.request.append(
            Request(
                cpu_millis=max(10, min(16000, round(cpu * log_uniform(rng, 0.3, 3)))),
                memory_bytes=max(16 * MIB, min(64 * GIB, int(mem * log_uniform(rng, 0.3, 3)))),
            )
        )
        w.auto.append(rng.random() < AUTO)
        w.arrivals[at].append(pid)
        end = at + max(1, math.ceil(life))
        if end < duration:
            w.departures[end].append(pid)
        if rng.random() < PHASED:
            t = at + rng.expovariate(1 / PHASE_MEAN)
            while t < min(end, duration):
                w.phases[int(t)].append(
                    (
                        pid,
                        min(8000.0, cpu * rng.lognormvariate(-0.32, 0.8)),
                        min(24.0 * GIB, mem * rng.lognormvariate(-0.045, 0.3)),
                    )
                )
                t += rng.expovariate(1 / PHASE_MEAN)

    first = [p for p, _ in LIFETIMES]
    for t in range(duration):
        rate = processes / fill if t < fill else 0.0  # the first cohort ...
        for _ in range(poisson(rng, rate)):
            add(t, residual)
        if t >= fill:  # ... then the rate that keeps `processes` live
            for _ in range(poisson(rng, processes / mean_life)):
                add(t, first)
    return w


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:  # normal approximation; exact enough for arrivals per second
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, rng.random(), math.exp(-lam)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# ----- the baselines: same Placer interface, same misfit filters --------------


class RandomFit:
    """A random fitting node."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision:
        for node in ledger.sample(32, self.rng):
            if node.name not in exclude and misfit(request, node) is None:
                return Decision(node.name, "random")
        fitting = [n for n in ledger if n.name not in exclude and misfit(request, n) is None]
        if not fitting:
            return Decision(None, "nothing fits")
        return Decision(self.rng.choice(fitting).name, "random (scanned)")


class RoundRobin:
    """The next fitting node after the last one chosen."""

    def __init__(self) -> None:
        self.nodes: list[NodeState] = []
        self.next = 0

    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision:
        if len(self.nodes) != len(ledger):
            self.nodes = list(ledger)
        n = len(self.nodes)
        for k in range(n):
            node = self.nodes[(self.next + k) % n]
            if node.name not in exclude and misfit(request, node) is None:
                self.next = (self.next + k + 1) % n
                return Decision(node.name, "round-robin")
        return Decision(None, "nothing fits")


class StaleLeastLoaded:
    """The least pressure by reported usage, from a metrics cache: every `refresh`
    seconds it takes the nodes' reports, and uses them `delay` seconds later (a
    metrics pipeline). It does not count what it placed since."""

    def __init__(self, refresh: float = 30.0, delay: float = 30.0) -> None:
        self.refresh, self.delay = refresh, delay
        self.snapshots: list[tuple[float, list[NodeState]]] = []  # taken at, coolest first
        self.order: list[NodeState] = []
        self.taken: float | None = None

    def tick(self, ledger: Ledger, now: float) -> None:
        if self.taken is None or now - self.taken >= self.refresh:
            self.taken = now

            def load(n: NodeState) -> float:
                if n.signals is None:
                    return 0.0
                return ledger.model.pressure(n.signals, n.cpu_millis, n.memory_bytes)

            self.snapshots.append((now, sorted(ledger, key=lambda n: (load(n), n.name))))
        while self.snapshots and (not self.order or self.snapshots[0][0] <= now - self.delay):
            self.order = self.snapshots.pop(0)[1]

    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision:
        for node in self.order:
            if node.name not in exclude and misfit(request, node) is None:
                return Decision(node.name, "least loaded (cached)")
        return Decision(None, "nothing fits")


class LeastAllocated:
    """kube-scheduler's default scoring of resources (v1.34, pkg/scheduler): the sum of
    NodeResourcesFit (LeastAllocated, cpu and memory weight 1) and
    NodeResourcesBalancedAllocation, integer scores 0-100 each, over the first
    numFeasibleNodesToFind feasible nodes from a rotating start; ties broken at random.
    Requests only: it never sees usage."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.nodes: list[NodeState] = []
        self.next = 0

    @staticmethod
    def feasible_to_find(n: int) -> int:  # schedule_one.go numFeasibleNodesToFind
        if n < 100:
            return n
        percentage = max(5, 50 - n // 125)
        return max(100, n * percentage // 100)

    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision:
        if len(self.nodes) != len(ledger):
            self.nodes = list(ledger)
        nodes, n = self.nodes, len(self.nodes)
        want = self.feasible_to_find(n)
        best: NodeState | None = None
        best_score, ties, found, processed = -1, 0, 0, 0
        for k in range(n):
            node = nodes[(self.next + k) % n]
            processed += 1
            if node.name in exclude or misfit(request, node) is not None:
                continue
            found += 1
            cpu_req = node.reserved_cpu_millis + request.cpu_millis
            mem_req = node.reserved_memory_bytes + request.memory_bytes
            cpu_cap, mem_cap = node.cpu_millis, node.memory_bytes
            least = (
                (cpu_cap - cpu_req) * 100 // cpu_cap + (mem_cap - mem_req) * 100 // mem_cap
            ) // 2
            balanced = int(
                (1 - abs(min(1.0, cpu_req / cpu_cap) - min(1.0, mem_req / mem_cap)) / 2) * 100
            )
            score = least + balanced
            if score > best_score:
                best, best_score, ties = node, score, 1
            elif score == best_score:
                ties += 1
                if self.rng.randrange(ties) == 0:
                    best = node
            if found >= want:
                break
        self.next = (self.next + processed) % n if n else 0
        if best is None:
            return Decision(None, "nothing fits")
        return Decision(best.name, f"least allocated (score {best_score})")


# ----- the world --------------------------------------------------------------


def cpu_stall(demand: float) -> float:
    """PSI cpu some avg10 (percent) at a demand/capacity ratio."""
    return min(100.0, max(0.0, (demand - 0.7) / 0.6 * 100.0))


def memory_stall(used: float) -> float:
    return min(100.0, max(0.0, (used - 0.85) / 0.3 * 100.0))


@dataclass
class Policy:
    name: str
    placer: Placer
    tick: Callable[[Ledger, float], None] | None = None
    rebalancer: Rebalancer | None = None


@dataclass
class Result:
    name: str
    rebalancer: RebalanceConfig | None = None
    wall: float = 0.0
    decisions: list[float] = field(default_factory=list)  # microseconds
    unschedulable: int = 0  # decisions that found no node
    never_placed: int = 0  # processes that left (or the run ended) before a node took them
    placed: int = 0  # processes ever placed
    cv: list[float] = field(default_factory=list)  # per sample
    mean_pressure: list[float] = field(default_factory=list)
    p99_pressure: list[float] = field(default_factory=list)
    hot: list[float] = field(default_factory=list)  # share of nodes above the high watermark
    over: list[float] = field(default_factory=list)  # share of nodes above 100 % pressure
    live: list[int] = field(default_factory=list)
    moves: int = 0
    completed: int = 0
    oscillations: int = 0  # a process moved back to a node it left within the cooldown
    reversals: int = 0  # a move B->A within the cooldown of a move A->B (any process)
    steps: list[float] = field(default_factory=list)  # milliseconds
    notes: Counter[str] = field(default_factory=Counter)


def simulate(w: Workload, policy: Policy, duration: int, warmup: int) -> Result:
    result = Result(
        policy.name, policy.rebalancer.config if policy.rebalancer is not None else None
    )
    started = time.perf_counter()
    model = PressureModel()
    ledger = Ledger(model)
    names, cpu_cap, mem_cap = w.names, w.cpu_cap, w.mem_cap
    n = len(names)
    index = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        state = ledger.node(name)
        state.cpu_millis, state.memory_bytes, state.ready = cpu_cap[i], mem_cap[i], True
        ledger.report(name, Signals(at=0.0))
    node_cpu, node_mem = [0.0] * n, [0.0] * n  # true usage
    cpu, mem = list(w.cpu), list(w.mem)  # each process's use now
    where = [-1] * len(cpu)  # node index; -1: not placed (yet, or any more)
    waiting: dict[int, None] = {}  # unschedulable, in arrival order, retried
    flight: dict[int, tuple[int, int]] = {}  # moving: pid -> (source, target)
    lands: dict[int, list[int]] = {}  # second -> pids whose move completes then
    movable: dict[int, Movable | None] = {}  # Auto, placed, not moving; None: to rebuild
    left: dict[int, dict[int, float]] = {}  # pid -> node -> when it was moved off it
    pair: dict[tuple[int, int], float] = {}  # (source, target) -> last move
    rebalancer = policy.rebalancer
    cfg = rebalancer.config if rebalancer is not None else RebalanceConfig()
    place, decisions = policy.placer.place, result.decisions
    slots = [list(range(s, n, REPORT_EVERY)) for s in range(REPORT_EVERY)]

    psi_cpu, psi_mem = [0.0] * n, [0.0] * n  # what the agents report: avg10, lagging

    def signals(i: int, now: float, report: bool = False) -> Signals:
        """The node now (true), or as its agent reports it: PSI as avg10, an average
        over about 10 s, updated here once per report."""
        c, m = node_cpu[i], node_mem[i]
        stall_cpu, stall_mem = cpu_stall(c / cpu_cap[i]), memory_stall(m / mem_cap[i])
        if report:
            stall_cpu = psi_cpu[i] = psi_cpu[i] * AVG10_DECAY + stall_cpu * (1 - AVG10_DECAY)
            stall_mem = psi_mem[i] = psi_mem[i] * AVG10_DECAY + stall_mem * (1 - AVG10_DECAY)
        return Signals(
            at=now,
            cpu_psi=stall_cpu,
            memory_psi=stall_mem,
            cpu_used_millis=min(max(0.0, c), cpu_cap[i]),
            memory_used_bytes=min(max(0.0, m), mem_cap[i]),
        )

    def try_place(pid: int, now: float) -> bool:
        request = w.request[pid]
        t0 = time.perf_counter_ns()
        decision = place(request, ledger, now)
        decisions.append((time.perf_counter_ns() - t0) / 1000)
        if decision.node is None:
            result.unschedulable += 1
            return False
        i = index[decision.node]
        where[pid] = i
        node_cpu[i] += cpu[pid]
        node_mem[i] += mem[pid]
        ledger.reserve(decision.node, request.cpu_millis, request.memory_bytes, now)
        result.placed += 1
        if w.auto[pid]:
            movable[pid] = None
        return True

    for t in range(duration):
        now = float(t)
        for pid in lands.pop(t, ()):  # moves completing: the use follows the process
            if pid not in flight:
                continue  # it left meanwhile
            source, target = flight.pop(pid)
            request = w.request[pid]
            node_cpu[source] -= cpu[pid]
            node_mem[source] -= mem[pid]
            node_cpu[target] += cpu[pid]
            node_mem[target] += mem[pid]
            where[pid] = target
            ledger.release(names[source], request.cpu_millis, request.memory_bytes)
            # As the operator accounts a running process's new node: held, not pending
            # (the rebalancer already expected the load on both nodes when it decided).
            ledger.reserve(
                names[target], request.cpu_millis, request.memory_bytes, now, expect=False
            )
            movable[pid] = None
            result.completed += 1
        for pid in w.departures[t]:
            waiting.pop(pid, None)
            flight.pop(pid, None)
            movable.pop(pid, None)
            i = where[pid]
            if i >= 0:
                node_cpu[i] -= cpu[pid]
                node_mem[i] -= mem[pid]
                request = w.request[pid]
                ledger.release(names[i], request.cpu_millis, request.memory_bytes)
                where[pid] = -1
        for pid, use_cpu, use_mem in w.phases[t]:
            i = where[pid]
            if i >= 0:
                node_cpu[i] += use_cpu - cpu[pid]
                node_mem[i] += use_mem - mem[pid]
            cpu[pid], mem[pid] = use_cpu, use_mem
            if pid in movable:
                movable[pid] = None
        if policy.tick is not None:
            policy.tick(ledger, now)
        if t % RETRY_EVERY == 0 and waiting:
            for pid in list(waiting):
                if try_place(pid, now):
                    del waiting[pid]
        for pid in w.arrivals[t]:
            if not try_place(pid, now):
                waiting[pid] = None
        for i in slots[t % REPORT_EVERY]:
            ledger.report(names[i], signals(i, now, report=True))
        if rebalancer is not None and t > 0 and t % int(cfg.interval) == 0:
            offered: list[Movable] = []
            for pid, cached in movable.items():
                m = cached or Movable(
                    ("bench", str(pid)), names[where[pid]], w.request[pid], cpu[pid], mem[pid]
                )
                movable[pid] = m
                offered.append(m)
            active: Counter[str] = Counter()
            for source, target in flight.values():
                active[names[source]] += 1
                active[names[target]] += 1
            t0 = time.perf_counter_ns()
            plan = rebalancer.step(ledger, now, offered, active)
            result.steps.append((time.perf_counter_ns() - t0) / 1e6)
            result.notes.update(note.outcome for note in plan.notes)
            for move in plan.moves:
                pid, source, target = int(move.key[1]), index[move.source], index[move.target]
                assert where[pid] == source and pid not in flight, move
                gone = left.setdefault(pid, {})
                if target in gone and now - gone[target] < cfg.cooldown:
                    result.oscillations += 1
                gone[source] = now
                if now - pair.get((target, source), -math.inf) < cfg.cooldown:
                    result.reversals += 1
                pair[source, target] = now
                flight[pid] = (source, target)
                del movable[pid]
                lands.setdefault(t + 2 + math.ceil(mem[pid] / GIB), []).append(pid)
                result.moves += 1
        if t >= warmup and t % SAMPLE_EVERY == 0:
            pressures = [model.pressure(signals(i, now), cpu_cap[i], mem_cap[i]) for i in range(n)]
            mean = statistics.fmean(pressures)
            result.cv.append(statistics.pstdev(pressures, mean) / mean)
            result.mean_pressure.append(mean)
            result.p99_pressure.append(pct(pressures, 99))
            result.hot.append(sum(p > cfg.high_watermark for p in pressures) / n)
            result.over.append(sum(p > 100 for p in pressures) / n)
            result.live.append(sum(1 for i in where if i >= 0))
    result.never_placed = sum(1 for t in range(duration) for pid in w.arrivals[t]) - result.placed
    result.wall = time.perf_counter() - started
    return result


# ----- the run ----------------------------------------------------------------

OURS = "backpressure+rebalancer"


def scaled(config: RebalanceConfig, nodes: int) -> RebalanceConfig:
    """The cluster-wide migration budget scaled to the cluster: one migration per minute
    per 50 nodes, and a burst of one interval's worth (the bucket holds at most `burst`
    tokens, so a rate above burst per interval would not be reached)."""
    rate = max(config.rate_per_minute, nodes / 50)
    burst = max(config.burst, math.ceil(rate * config.interval / 60))
    return replace(config, rate_per_minute=rate, burst=burst)


def policies(seed: int, rebalance: RebalanceConfig, nodes: int) -> list[Policy]:
    stale = StaleLeastLoaded()
    budget = scaled(rebalance, nodes)
    every = [
        Policy("random", RandomFit(seed)),
        Policy("round-robin", RoundRobin()),
        Policy("least-loaded(stale)", stale, tick=stale.tick),
        Policy("least-allocated(k8s)", LeastAllocated(seed)),
        Policy("backpressure", Backpressure(seed=seed)),
        Policy(OURS, Backpressure(seed=seed), rebalancer=Rebalancer(rebalance)),
    ]
    if budget != rebalance:
        name = f"backpressure+rebal({budget.rate_per_minute:g}/m)"
        every.append(Policy(name, Backpressure(seed=seed), rebalancer=Rebalancer(budget)))
    return every


def row(r: Result) -> str:
    mean = statistics.fmean
    per_process = r.moves / r.placed if r.placed else 0.0
    steps = f"{pct(r.steps, 50):6.1f} {pct(r.steps, 99):6.1f}" if r.steps else f"{'-':>6} {'-':>6}"
    return (
        f"{r.name:<27}{mean(r.live):>7.0f}{len(r.decisions):>8}"
        f"{pct(r.decisions, 50):>8.0f}{pct(r.decisions, 99):>8.0f}"
        f"{r.unschedulable:>8}{r.never_placed:>7}{mean(r.cv):>7.3f}{pct(r.cv, 90):>7.3f}"
        f"{mean(r.mean_pressure):>7.1f}{mean(r.p99_pressure):>7.1f}{100 * mean(r.hot):>7.2f}"
        f"{100 * mean(r.over):>7.2f}{r.moves:>7}{per_process:>9.5f}{r.oscillations:>5}"
        f"{r.reversals:>5} {steps}{r.wall:>6.0f}"
    )


HEADER = (
    f"{'policy':<27}{'live':>7}{'decided':>8}{'p50 us':>8}{'p99 us':>8}{'unsched':>8}{'never':>7}"
    f"{'CV':>7}{'CV p90':>7}{'mean P':>7}{'p99 P':>7}{'>80 %':>7}{'>100 %':>7}{'moves':>7}"
    f"{'per proc':>9}{'osc':>5}{'rev':>5} {'step ms p50/p99':>13}{'wall s':>7}"
)


def rebalance_config(overrides: str) -> RebalanceConfig:
    types = {f.name: type(getattr(RebalanceConfig(), f.name)) for f in fields(RebalanceConfig)}
    changes: dict[str, float | int] = {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise ValueError(f"no field {key!r} (fields: {', '.join(types)})")
        changes[key] = types[key](value)
    return RebalanceConfig(**changes)  # type: ignore[arg-type]


LEGEND = """
live: processes running (mean over samples); decided: place() calls (retries included);
p50/p99 us: their latency in microseconds; unsched: calls that found no node;
never: processes that left or outlived the run unplaced;
CV: stdev/mean of the true node pressure, mean and p90 over samples; mean P, p99 P: node
pressure; >80 %, >100 %: share of nodes above the high watermark, above 100;
moves: migrations started; per proc: moves per process placed; osc: a process moved back
to a node it left within the cooldown; rev: a move B->A within the cooldown of one A->B;
step ms: rebalancer step latency; wall s: the policy's whole simulation
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=50000, help="live at steady state")
    parser.add_argument("--duration", type=int, default=3600, help="simulated seconds")
    parser.add_argument(
        "--fill", type=int, default=300, help="seconds the first cohort arrives over"
    )
    parser.add_argument("--warmup", type=int, default=600, help="seconds before sampling")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default="", help="comma-separated subset (default: all)")
    parser.add_argument(
        "--rebalance",
        default="",
        metavar="FIELD=VALUE,...",
        help="RebalanceConfig fields to change from their defaults, e.g. "
        "rate_per_minute=60,burst=10",
    )
    args = parser.parse_args()
    if not 0 < args.fill <= args.warmup < args.duration:
        parser.error("need 0 < --fill <= --warmup < --duration")
    print(machine())
    t0 = time.perf_counter()
    w = generate(args.nodes, args.processes, args.duration, args.fill, args.seed)
    gc.collect()
    gc.freeze()  # the stream is the simulator's, not the operator's: keep it out of GC
    total = sum(len(a) for a in w.arrivals)
    cores, mem = sum(w.cpu_cap) / 1000, sum(w.mem_cap) / GIB
    live = [p for t in range(args.fill) for p in w.arrivals[t]]
    print(
        f"world: {args.nodes} nodes ({cores:,.0f} cores, {mem / 1024:,.1f} TiB), "
        f"{args.processes} live at steady state, {total} arrivals in {args.duration} s "
        f"(first cohort over {args.fill} s), reports every {REPORT_EVERY} s, sampled every "
        f"{SAMPLE_EVERY} s from {args.warmup} s, seed {args.seed}; "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )
    print(
        f"first cohort: use {sum(w.cpu[p] for p in live) / 1000 / cores:.0%} of CPU, "
        f"{sum(w.mem[p] for p in live) / GIB / mem:.0%} of memory; requests "
        f"{sum(w.request[p].cpu_millis for p in live) / 1000 / cores:.0%} of CPU, "
        f"{sum(w.request[p].memory_bytes for p in live) / GIB / mem:.0%} of memory"
    )
    try:
        rebalance = rebalance_config(args.rebalance)
    except (TypeError, ValueError) as e:
        parser.error(f"--rebalance: {e}")
    print(f"rebalancer: {rebalance}")
    every = policies(args.seed, rebalance, args.nodes)
    wanted = set(filter(None, args.policies.split(",")))
    if wanted - {p.name for p in every}:
        parser.error(f"--policies: one of {', '.join(p.name for p in every)}")
    chosen = [p for p in every if not wanted or p.name in wanted]
    results: dict[str, Result] = {}
    for policy in chosen:
        results[policy.name] = r = simulate(w, policy, args.duration, args.warmup)
        print(f"  {policy.name}: {r.wall:.0f} s", flush=True)
    print(LEGEND)
    print(HEADER)
    for r in results.values():
        print(row(r))
    for r in results.values():
        if r.rebalancer is not None:
            verdict(r, results)


def verdict(ours: Result, results: dict[str, Result]) -> None:
    cfg = ours.rebalancer
    assert cfg is not None
    print(
        f"\n{ours.name}: rate_per_minute={cfg.rate_per_minute:g}, burst={cfg.burst}; "
        f"{ours.completed} of {ours.moves} migrations completed (the rest: the process left "
        f"first or the run ended); rebalancer notes: {dict(ours.notes.most_common())}"
    )
    p99 = pct(ours.decisions, 99)
    print(f"{'PASS' if p99 <= 1000 else 'MISS'}  p99 decision {p99 / 1000:.3f} ms <= 1 ms")
    cv = statistics.fmean(ours.cv)
    rnd, stale = results.get("random"), results.get("least-loaded(stale)")
    if rnd is not None:
        limit = statistics.fmean(rnd.cv) / 2
        print(
            f"{'PASS' if cv <= limit else 'MISS'}  imbalance {cv:.3f} <= half of random's "
            f"({limit:.3f})"
        )
    if stale is not None:
        limit = statistics.fmean(stale.cv)
        print(
            f"{'PASS' if cv < limit else 'MISS'}  imbalance {cv:.3f} < least-loaded with stale "
            f"data's ({limit:.3f})"
        )
    print(f"{'PASS' if ours.oscillations == 0 else 'MISS'}  oscillations {ours.oscillations} == 0")


if __name__ == "__main__":
    main()
