"""Backpressure placement, rebalancing and the ClusterCgroup quota split, called directly."""

from __future__ import annotations

import random

from serverlessos_operator.budgets.split import (
    MIN_SHARE_MILLIS,
    Want,
    admit_memory,
    demand,
    fallback_share,
    split_cpu,
)

GIB = 2**30


def check_shares(budget: int, wants: dict[str, Want], shares: dict[str, int]) -> None:
    assert set(shares) == set(wants)
    assert sum(shares.values()) <= budget
    for k, w in wants.items():
        cap = w.cap_millis or budget
        assert shares[k] <= cap
    # Max-min fair: a member that got less than it wants got at least as much as anyone
    # else could have given up (every other share <= its own, unless capped by demand).
    for k, w in wants.items():
        if shares[k] + 1 < min(w.demand_millis, w.cap_millis or budget):
            for other, share in shares.items():
                assert share <= shares[k] + 1, (k, other, shares)


def test_split_is_max_min_fair_and_within_budget() -> None:
    shares = split_cpu(1000, {"a": Want(2000), "b": Want(2000)})
    assert shares == {"a": 500, "b": 500}
    shares = split_cpu(1000, {"small": Want(100), "big": Want(2000)})
    assert shares == {"small": 100, "big": 900}
    shares = split_cpu(1000, {"a": Want(0), "b": Want(2000)})  # a stopped using it
    assert shares["b"] >= 990 and shares["a"] == MIN_SHARE_MILLIS
    spare = split_cpu(3000, {"a": Want(100), "b": Want(200, cap_millis=500)})
    assert spare == {"a": 2500, "b": 500}  # what nobody wants is spread, up to caps


def test_split_invariants_hold_for_random_demands() -> None:
    rng = random.Random(7)
    for _ in range(500):
        budget = rng.randint(10, 20000)
        wants = {
            f"m{i}": Want(rng.uniform(0, 5000), rng.choice([0, 0, rng.randint(1, 4000)]))
            for i in range(rng.randint(1, 20))
        }
        check_shares(budget, wants, split_cpu(budget, wants))


def test_demand_estimate_converges_to_what_members_use() -> None:
    """Two members wanting 0.3 and 2 cores under a 1-core budget; the world throttles each
    to its share: shares settle at 300 / 700 within a few intervals."""
    true = {"light": 0.3, "heavy": 2.0}
    shares = dict.fromkeys(true, 500)
    for _ in range(5):
        wants = {}
        for k, want in true.items():
            used = min(want, shares[k] / 1000)
            throttled = 1.0 if want > shares[k] / 1000 else 0.0  # its group waited all along
            wants[k] = Want(demand(used, throttled))
        shares = split_cpu(1000, wants)
    assert shares == {"light": 300, "heavy": 700}


def test_memory_admission_and_fallback() -> None:
    assert admit_memory(GIB, {"a": 512 * 2**20}, 256 * 2**20) == (True, 512 * 2**20)
    assert admit_memory(GIB, {"a": 768 * 2**20}, 512 * 2**20) == (False, 768 * 2**20)
    assert fallback_share(1000, 2) == 500
    assert fallback_share(1000, 4, cap_millis=200) == 200
    assert fallback_share(10, 5) == MIN_SHARE_MILLIS
