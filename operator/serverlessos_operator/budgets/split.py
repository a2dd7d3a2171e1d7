"""A ClusterCgroup's budget split across its members, wherever they run.

CPU: every interval each member's demand is estimated (its CPU use plus the time
it spent throttled: a member held at its share and throttled wants more), and
the budget is split max-min fairly (water-filling): members that want less than
an equal share get what they want, the rest share what is left equally, and
what nobody wants is spread evenly so a member can grow into it by the next
interval. Nobody is given more than its own limit, and the shares never add up
to more than the budget. Each member's share becomes its cgroup's CPU limit on
its node.

Memory cannot be taken back from a process without killing it, so it is not
split: each member keeps the limit it asked for, and a member is admitted only
if its limit fits in what the others hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")

# The smallest CPU share given: CFS cannot enforce much below 1 ms per 100 ms period.
MIN_SHARE_MILLIS = 10


@dataclass(frozen=True)
class Want:
    demand_millis: float  # estimated: use + throttled
    cap_millis: int = 0  # its own limit (spec.resources.cpu); 0 = none


def demand(usage_cores: float, throttled_seconds_per_second: float) -> float:
    """Millicores a member wants: what it used plus what throttling denied it."""
    return 1000.0 * (max(0.0, usage_cores) + max(0.0, throttled_seconds_per_second))


def split_cpu(budget_millis: int, wants: Mapping[K, Want]) -> dict[K, int]:
    """Max-min fair shares, whole millicores, summing to at most the budget."""
    if not wants:
        return {}
    floor = min(MIN_SHARE_MILLIS, budget_millis // len(wants))
    caps = {k: (w.cap_millis if w.cap_millis > 0 else budget_millis) for k, w in wants.items()}
    # First pass: satisfy demands max-min fairly; second pass: spread the rest the same
    # way up to each member's cap (headroom to show it wants more next time).
    shares = _water_fill(
        budget_millis, {k: max(floor, min(w.demand_millis, caps[k])) for k, w in wants.items()}
    )
    left = budget_millis - sum(shares.values())
    if left > 0:
        extra = _water_fill(left, {k: caps[k] - shares[k] for k in wants})
        shares = {k: shares[k] + extra[k] for k in wants}
    return {k: int(v) for k, v in shares.items()}


def _water_fill(amount: float, limits: Mapping[K, float]) -> dict[K, float]:
    """Give each up to its limit, equally, without exceeding `amount` in total."""
    out: dict[K, float] = dict.fromkeys(limits, 0.0)
    order = sorted(limits, key=lambda k: limits[k])
    remaining, left = float(amount), len(order)
    for k in order:
        share = min(limits[k], remaining / left)
        out[k] = share
        remaining -= share
        left -= 1
    return {k: float(int(v)) for k, v in out.items()}  # floor: never above the amount


def admit_memory(budget_bytes: int, held: Mapping[K, int], asks: int) -> tuple[bool, int]:
    """Whether a member asking `asks` bytes fits beside the members holding `held`;
    returns (fits, bytes the others hold)."""
    total = sum(held.values())
    return total + asks <= budget_bytes, total


def fallback_share(budget_millis: int, members: int, cap_millis: int = 0) -> int:
    """The share an agent falls back to when its lease runs out: the budget split evenly
    (safe whatever the others do), never above the member's own limit."""
    share = max(MIN_SHARE_MILLIS, budget_millis // max(1, members))
    return min(share, cap_millis) if cap_millis > 0 else share
