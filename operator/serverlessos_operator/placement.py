"""Where a process should run: filters first, then the least-pressured node that fits.

Plain code behind one interface (`Placer`), so the backpressure controller of a
later issue can replace the policy without touching the operator's wiring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"  # or "Exists"
    value: str = ""
    effect: str = ""  # "" = every effect

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class NodeView:
    """What placement knows of a node: its agent's report plus its Node object."""

    name: str
    ready: bool
    cpu_millis: int  # allocatable
    memory_bytes: int
    reserved_cpu_millis: int = 0  # requests of the processes placed there
    reserved_memory_bytes: int = 0
    cpu_pressure: float = 0.0  # PSI some avg10, percent
    memory_pressure: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()

    @property
    def free_cpu(self) -> int:
        return self.cpu_millis - self.reserved_cpu_millis

    @property
    def free_memory(self) -> int:
        return self.memory_bytes - self.reserved_memory_bytes


@dataclass(frozen=True)
class Request:
    cpu_millis: int
    memory_bytes: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class Decision:
    node: str | None
    reason: str  # why this node, or why none


class Placer(Protocol):
    def place(self, request: Request, nodes: Iterable[NodeView]) -> Decision: ...


def _misfit(request: Request, node: NodeView) -> str | None:
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


def _pressure(request: Request, node: NodeView) -> float:
    """Lower is better: PSI stall plus how full the node would be afterwards."""
    cpu_fill = (node.reserved_cpu_millis + request.cpu_millis) / max(1, node.cpu_millis)
    mem_fill = (node.reserved_memory_bytes + request.memory_bytes) / max(1, node.memory_bytes)
    return max(cpu_fill, mem_fill) * 100 + node.cpu_pressure + node.memory_pressure


class LeastPressure:
    """The least-pressured node that fits; ties go to the name, for determinism."""

    def place(self, request: Request, nodes: Iterable[NodeView]) -> Decision:
        nodes = list(nodes)
        if not nodes:
            return Decision(None, "no nodes with a ServerlessOS agent")
        fits: list[NodeView] = []
        reasons: dict[str, int] = {}
        for node in nodes:
            why = _misfit(request, node)
            if why is None:
                fits.append(node)
            else:
                reasons[why] = reasons.get(why, 0) + 1
        if not fits:
            summary = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            return Decision(None, f"0/{len(nodes)} nodes fit: {summary}")
        best = min(fits, key=lambda n: (_pressure(request, n), n.name))
        return Decision(best.name, f"least pressure of {len(fits)} fitting nodes")
