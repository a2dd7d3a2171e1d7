"""The operator's book of nodes: capacity, reservations, last reports, recent moves.

Kept incrementally (a placement adds, a departure subtracts, a report replaces
the signals), so a placement decision never walks every process: at 50,000
processes a rebuilt view per decision would cost more than the decision.

Load placed on (or moved off) a node after its last report is invisible in that
report. The ledger keeps it as *pending* until a report taken at least `settle`
seconds after it arrives: without that, a burst piles onto the node that merely
looked cold, and a node that just shed work keeps looking hot.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .constraints import Taint
from .pressure import PressureModel, Signals


@dataclass
class NodeState:
    name: str
    cpu_millis: int = 0  # allocatable
    memory_bytes: int = 0
    ready: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    reserved_cpu_millis: int = 0  # requests of the processes placed here
    reserved_memory_bytes: int = 0
    signals: Signals | None = None
    pending: deque[tuple[float, float, float]] = field(default_factory=deque)  # at, cpu, memory

    @property
    def free_cpu(self) -> int:
        return self.cpu_millis - self.reserved_cpu_millis

    @property
    def free_memory(self) -> int:
        return self.memory_bytes - self.reserved_memory_bytes


class Ledger:
    def __init__(
        self,
        model: PressureModel | None = None,
        stale_after: float = 15.0,
        settle: float = 5.0,
    ) -> None:
        self.model = model or PressureModel()
        self.stale_after = stale_after
        self.settle = settle
        self._nodes: dict[str, NodeState] = {}
        self._names: list[str] = []  # for O(1) random sampling
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self._nodes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def get(self, name: str) -> NodeState | None:
        return self._nodes.get(name)

    def node(self, name: str) -> NodeState:
        """The node's entry, created empty (not ready) if new."""
        state = self._nodes.get(name)
        if state is None:
            state = self._nodes[name] = NodeState(name)
            self._index[name] = len(self._names)
            self._names.append(name)
        return state

    def remove(self, name: str) -> None:
        if self._nodes.pop(name, None) is None:
            return
        i = self._index.pop(name)
        last = self._names.pop()
        if last != name:
            self._names[i] = last
            self._index[last] = i

    def sample(self, k: int, rng: random.Random) -> list[NodeState]:
        if k >= len(self._names):
            return list(self._nodes.values())
        return [self._nodes[n] for n in rng.sample(self._names, k)]

    # ----- what changes it --------------------------------------------------

    def report(self, name: str, signals: Signals) -> None:
        self.node(name).signals = signals

    def reserve(
        self, name: str, cpu_millis: int, memory_bytes: int, now: float, expect: bool = True
    ) -> None:
        """A process placed on the node: its request is held and (`expect`) counted as
        load until a report shows it."""
        state = self.node(name)
        state.reserved_cpu_millis += cpu_millis
        state.reserved_memory_bytes += memory_bytes
        if expect:
            self.expect(name, cpu_millis, memory_bytes, now)

    def release(self, name: str, cpu_millis: int, memory_bytes: int) -> None:
        state = self._nodes.get(name)
        if state is not None:
            state.reserved_cpu_millis -= cpu_millis
            state.reserved_memory_bytes -= memory_bytes

    def expect(self, name: str, cpu_millis: float, memory_bytes: float, now: float) -> None:
        """Load that will show (negative: will vanish) in the node's next reports."""
        state = self.node(name)
        state.pending.append((now, cpu_millis, memory_bytes))
        while state.pending and state.pending[0][0] < now - 60.0:
            state.pending.popleft()

    # ----- what it says -----------------------------------------------------

    def fresh(self, state: NodeState, now: float) -> bool:
        return state.signals is not None and now - state.signals.at <= self.stale_after

    def pending_load(self, state: NodeState) -> tuple[float, float]:
        if state.signals is None:
            return 0.0, 0.0
        since = state.signals.at - self.settle
        cpu = memory = 0.0
        for at, c, m in reversed(state.pending):  # newest first; stop at the old ones
            if at <= since:
                break
            cpu += c
            memory += m
        return cpu, memory

    def pressure(
        self, state: NodeState, now: float, extra_cpu: float = 0.0, extra_memory: float = 0.0
    ) -> float | None:
        """The node's pressure with its pending load (and `extra`) added; None when its
        report is stale or missing: unknown, never mistaken for idle."""
        if not self.fresh(state, now):
            return None
        assert state.signals is not None
        cpu, memory = self.pending_load(state)
        return self.model.pressure(
            state.signals,
            state.cpu_millis,
            state.memory_bytes,
            cpu + extra_cpu,
            memory + extra_memory,
        )
