"""Where a process should run: filters first, then the least pressure afterwards.

`Backpressure` scores each candidate by the pressure it would have with the
process's demand added (pressure.py), counting what was placed there since its
last report (ledger.py), so a burst never lands on one node that merely looked
cold. Nodes whose reports are stale are unknown, not idle: they are used only
when no node with a fresh report fits. Above `scan_below` nodes it samples
candidates (power of d choices): a decision costs the same at 5,000 nodes as at 50.

Everything here is plain code behind one interface (`Placer`), so the operator,
the rebalancer and the benchmark's baselines all drive the same thing.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from .constraints import Request
from .ledger import Ledger, NodeState


@dataclass(frozen=True)
class Decision:
    node: str | None
    reason: str  # why this node, or why none
    stale: bool = False  # chosen without a fresh report


class Placer(Protocol):
    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision: ...


def misfit(request: Request, node: NodeState) -> str | None:
    """Why the node cannot take the request, or None."""
    if not node.ready:
        return "not ready"
    for key, value in request.node_selector.items():
        if node.labels.get(key) != value:
            return f"node selector {key}={value}"
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(
            t.tolerates(taint) for t in request.tolerations
        ):
            return f"untolerated taint {taint.key}={taint.value}:{taint.effect}"
    if request.cpu_millis > node.free_cpu:
        return "insufficient cpu"
    if request.memory_bytes > node.free_memory:
        return "insufficient memory"
    return None


def allocated(request: Request, node: NodeState) -> float:
    """How full the node's reservations would be, 0..1 (the tie-break, and the only
    measure left when reports are stale)."""
    return max(
        (node.reserved_cpu_millis + request.cpu_millis) / max(1, node.cpu_millis),
        (node.reserved_memory_bytes + request.memory_bytes) / max(1, node.memory_bytes),
    )


def explain(request: Request, nodes: Collection[NodeState], exclude: Collection[str]) -> str:
    reasons: dict[str, int] = {}
    for node in nodes:
        why = "excluded" if node.name in exclude else misfit(request, node)
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
    summary = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    return f"0/{len(nodes)} nodes fit: {summary}"


class Backpressure:
    """The least pressure after placing, among d sampled fitting nodes (all when few)."""

    def __init__(self, choices: int = 4, scan_below: int = 64, seed: int | None = None) -> None:
        self.choices = max(1, choices)
        self.scan_below = scan_below
        self.rng = random.Random(seed)

    def place(
        self, request: Request, ledger: Ledger, now: float, exclude: Collection[str] = ()
    ) -> Decision:
        if not len(ledger):
            return Decision(None, "no nodes with a ServerlessOS agent")
        if len(ledger) <= self.scan_below:
            decision = self._best(request, ledger, list(ledger), now, exclude, None)
        else:
            # Oversample: filters may drop some; a full scan only when sampling finds none.
            sampled = ledger.sample(self.choices * 4, self.rng)
            decision = self._best(request, ledger, sampled, now, exclude, self.choices)
            if decision.node is None or decision.stale:
                # Nothing fresh in the sample: look at every node before settling for
                # an unknown one (or for none).
                decision = self._best(request, ledger, list(ledger), now, exclude, None)
        return decision

    def _best(  # noqa: PLR0917 (private; called twice, above)
        self,
        request: Request,
        ledger: Ledger,
        candidates: list[NodeState],
        now: float,
        exclude: Collection[str],
        enough: int | None,
    ) -> Decision:
        best: tuple[float, float, str] | None = None
        stale: list[NodeState] = []
        found = 0
        for node in candidates:
            if node.name in exclude or misfit(request, node) is not None:
                continue
            pressure = ledger.pressure(node, now, request.cpu_millis, request.memory_bytes)
            if pressure is None:
                stale.append(node)
                continue
            key = (pressure, allocated(request, node), node.name)
            if best is None or key < best:
                best = key
            found += 1
            if enough is not None and found >= enough:
                break
        if best is not None:
            how = f"{found} sampled" if enough is not None else f"{found} fitting"
            return Decision(best[2], f"least pressure ({best[0]:.0f}%) of {how} nodes")
        if stale:
            node = min(stale, key=lambda n: (allocated(request, n), n.name))
            return Decision(
                node.name,
                f"no fitting node has a fresh report; least allocated of {len(stale)} "
                "with stale reports",
                stale=True,
            )
        if enough is not None:
            return Decision(None, "sampled nodes do not fit")  # the caller scans them all
        return Decision(None, explain(request, candidates, exclude))
