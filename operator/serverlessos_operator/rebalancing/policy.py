"""When to move work off a hot node, and where: backpressure with brakes.

Every interval the operator calls `Rebalancer.step`. A node sheds only after it
stayed above the high watermark for `hot_intervals` consecutive intervals
(hysteresis: a spike is not a trend), and then only toward nodes under the low
watermark. A move must narrow the pressure gap between the two nodes by more
than it costs (a fixed part plus a part per GiB to copy), must not make its
target hot, and is further bounded by: at most `max_per_node` migrations touching
a node at once, a per-process cooldown, and a cluster-wide token bucket. A node
that shed waits `hot_intervals` again before shedding more, so the effect of a
move is seen before the next one is decided. Together these keep a steady
skewed load from moving anything back and forth.

Only processes whose `spec.migration.policy` is Auto are offered (`Movable`);
the result is a `Plan`: moves to carry out (as ProcessMigrations) and notes on
what was considered and why nothing moved (for Events and metrics).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ..scheduling.constraints import Request
from ..scheduling.ledger import Ledger
from ..scheduling.placement import misfit

Key = tuple[str, str]  # namespace, name
GIB = 2**30


@dataclass(frozen=True)
class RebalanceConfig:
    interval: float = 10.0  # seconds between steps
    high_watermark: float = 80.0  # pressure (percent) above which a node is hot
    low_watermark: float = 50.0  # only nodes below this receive
    hot_intervals: int = 3  # consecutive hot intervals before shedding
    max_per_node: int = 2  # concurrent migrations from or to one node
    cooldown: float = 600.0  # seconds before a moved process may move again
    rate_per_minute: float = 6.0  # cluster-wide migrations started, at least ...
    rate_per_100_nodes: float = 2.0  # ... or this per minute per 100 nodes, if more
    burst: int = 3  # at least; a step may always use what one interval earns
    cost_base: float = 10.0  # pressure points a move must gain, at least ...
    cost_per_gib: float = 10.0  # ... plus this per GiB of memory it copies
    target_choices: int = 16  # coolest receivers considered per move

    def __post_init__(self) -> None:
        if not 0 <= self.low_watermark < self.high_watermark:
            raise ValueError(
                f"rebalancing: lowWatermark ({self.low_watermark}) must be below "
                f"highWatermark ({self.high_watermark})"
            )
        if self.hot_intervals < 1 or self.max_per_node < 1 or self.interval <= 0:
            raise ValueError("rebalancing: hotIntervals, maxPerNode and interval must be >= 1")


@dataclass(frozen=True)
class Movable:
    """A process the rebalancer may move: policy Auto, running, not migrating."""

    key: Key
    node: str
    request: Request  # the target must pass the same filters as a placement
    cpu_millis: float  # its current use: what leaves the source and lands on the target
    memory_bytes: float


@dataclass(frozen=True)
class Move:
    key: Key
    source: str
    target: str
    reason: str


@dataclass(frozen=True)
class Note:
    node: str
    outcome: str  # migrate, busy, nothing-movable, no-target, not-worth, rate-limited
    reason: str


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


class Rebalancer:
    def __init__(self, config: RebalanceConfig | None = None) -> None:
        self.config = config or RebalanceConfig()
        self._hot: dict[str, int] = {}  # consecutive intervals above the high watermark
        self._moved: dict[Key, float] = {}  # when each process last moved
        self._tokens = float(self.config.burst)
        self._refilled: float | None = None

    def remember(self, key: Key, at: float) -> None:
        """A migration of the process (e.g. from its status, after an operator restart)."""
        self._moved[key] = max(at, self._moved.get(key, at))

    def cooling(self, key: Key, now: float) -> bool:
        at = self._moved.get(key)
        return at is not None and now - at < self.config.cooldown

    def hot_for(self, node: str) -> int:
        return self._hot.get(node, 0)

    def rate(self, nodes: int) -> float:
        """Migrations per minute the cluster may start: a budget that grows with it."""
        return max(self.config.rate_per_minute, nodes / 100 * self.config.rate_per_100_nodes)

    def _refill(self, now: float, nodes: int) -> None:
        rate = self.rate(nodes)
        # The bucket holds at least one interval's worth: a smaller burst would cap the
        # rate below what is configured.
        capacity = max(float(self.config.burst), rate * self.config.interval / 60.0)
        if self._refilled is not None:
            self._tokens = min(capacity, self._tokens + (now - self._refilled) * rate / 60.0)
        self._refilled = now

    def step(
        self,
        ledger: Ledger,
        now: float,
        movable: Iterable[Movable],
        active: Mapping[str, int],
        receivers: Collection[str] | None = None,
    ) -> Plan:
        """One interval. `active`: migrations in flight per node (source or target);
        `receivers`: nodes able to take a migration (None: all)."""
        cfg, plan = self.config, Plan()
        self._refill(now, len(ledger))
        pressure: dict[str, float] = {}
        for node in ledger:
            p = ledger.pressure(node, now) if node.ready else None
            if p is None:
                self._hot.pop(node.name, None)  # unknown is not hot
                continue
            pressure[node.name] = p
            if p > cfg.high_watermark:
                self._hot[node.name] = self._hot.get(node.name, 0) + 1
            else:
                self._hot.pop(node.name, None)
        for gone in set(self._hot) - set(pressure):
            del self._hot[gone]
        sources = sorted(
            (n for n, count in self._hot.items() if count >= cfg.hot_intervals),
            key=lambda n: -pressure[n],
        )
        for cooled in [k for k, at in self._moved.items() if now - at >= cfg.cooldown]:
            del self._moved[cooled]
        if not sources:
            return plan
        coolest = sorted(
            (
                n
                for n, p in pressure.items()
                if p < cfg.low_watermark and (receivers is None or n in receivers)
            ),
            key=lambda n: pressure[n],
        )
        by_node: dict[str, list[Movable]] = {}
        for m in movable:
            if m.node in self._hot:
                by_node.setdefault(m.node, []).append(m)
        step = _Step(ledger, now, pressure, coolest, dict(active), plan)
        for source in sources:
            self._shed(step, source, by_node.get(source, []))
        return plan

    def _shed(self, step: _Step, source: str, residents: list[Movable]) -> None:
        cfg, plan, busy, pressure, now = (
            self.config,
            step.plan,
            step.busy,
            step.pressure,
            step.now,
        )
        hot = (
            f"{source} at {pressure[source]:.0f}% > {cfg.high_watermark:.0f}% "
            f"for {self._hot[source]} intervals"
        )
        if busy.get(source, 0) >= cfg.max_per_node:
            plan.notes.append(Note(source, "busy", f"{hot}; {busy[source]} migrations in flight"))
            return
        candidates = sorted(
            (m for m in residents if not self.cooling(m.key, now)),
            key=lambda m: (-m.cpu_millis, m.key),
        )
        if not candidates:
            plan.notes.append(
                Note(source, "nothing-movable", f"{hot}; no Auto-policy process free to move")
            )
            return
        moved = False
        for m in candidates:
            if busy.get(source, 0) >= cfg.max_per_node:
                break
            choice = self._target(step, source, m)
            if choice is None:
                why = f"{hot}; no node under {cfg.low_watermark:.0f}% fits {_name(m)}"
                plan.notes.append(Note(source, "no-target", why))
                continue
            target, gain, src_after, tgt_after = choice
            cost = cfg.cost_base + cfg.cost_per_gib * m.memory_bytes / GIB
            if gain <= cost:
                why = f"{hot}; moving {_name(m)} to {target} gains {gain:.0f} <= cost {cost:.0f}"
                plan.notes.append(Note(source, "not-worth", why))
                continue
            if self._tokens < 1.0:
                rate = self.rate(len(step.ledger))
                why = f"{hot}; cluster migration rate limit ({rate:g}/min)"
                plan.notes.append(Note(source, "rate-limited", why))
                return
            self._tokens -= 1.0
            reason = (
                f"{hot}; {target} at {pressure[target]:.0f}%; expected after: {source} "
                f"{src_after:.0f}%, {target} {tgt_after:.0f}% (gain {gain:.0f} > cost {cost:.0f})"
            )
            plan.moves.append(Move(m.key, source, target, reason))
            plan.notes.append(Note(source, "migrate", f"{_name(m)} to {target}: {reason}"))
            step.ledger.expect(source, -m.cpu_millis, -m.memory_bytes, now)
            step.ledger.expect(target, m.cpu_millis, m.memory_bytes, now)
            busy[source] = busy.get(source, 0) + 1
            busy[target] = busy.get(target, 0) + 1
            self._moved[m.key] = now
            moved = True
            pressure[source], pressure[target] = src_after, tgt_after
            if src_after <= cfg.high_watermark:
                break
        if moved:
            self._hot[source] = 0  # see the moves take effect before shedding more

    def _target(
        self, step: _Step, source: str, m: Movable
    ) -> tuple[str, float, float, float] | None:
        """The receiver that narrows the gap the most: (node, gain, source after, target after)."""
        cfg, ledger, now = self.config, step.ledger, step.now
        src = ledger.get(source)
        src_after = (
            ledger.pressure(src, now, -m.cpu_millis, -m.memory_bytes) if src is not None else None
        )
        if src_after is None:
            return None
        best: tuple[str, float, float, float] | None = None
        tried = 0
        for name in step.coolest:
            if tried >= cfg.target_choices:
                break
            node = ledger.get(name)
            if node is None or name == source or step.busy.get(name, 0) >= cfg.max_per_node:
                continue
            if step.pressure[name] >= cfg.low_watermark:
                continue  # warmed by a move already decided this step
            if misfit(m.request, node) is not None:
                continue
            tried += 1
            after = ledger.pressure(node, now, m.cpu_millis, m.memory_bytes)
            if after is None or after >= cfg.high_watermark:
                continue
            gain = (step.pressure[source] - step.pressure[name]) - abs(src_after - after)
            if best is None or gain > best[1]:
                best = (name, gain, src_after, after)
        return best


@dataclass
class _Step:
    """What one step works on (pressures and in-flight counts change as it decides)."""

    ledger: Ledger
    now: float
    pressure: dict[str, float]
    coolest: list[str]
    busy: dict[str, int]
    plan: Plan


def _name(m: Movable) -> str:
    return f"{m.key[0]}/{m.key[1]}"
