"""The operator's books on ClusterCgroups: each budget, its members, and what it says
about a member (the BudgetPolicy the process controllers ask).

Memory is admitted, not split (see split.py): a process that would take the
members' memory limits past the budget waits in Pending, with the reason. CPU
shares are split every interval by the controller (controller.py); a member about to
start is granted what the others leave, and starts under a lease already.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import format_bytes_approx

from ..api.meta import object_ref
from ..api.v1alpha1 import ClusterCgroup, LabelSelector
from ..processes.book import Key, ProcessBook, ProcessInfo
from .split import MIN_SHARE_MILLIS, admit_memory, fallback_share


@dataclass
class Budget:
    namespace: str
    name: str
    uid: str
    generation: int
    selector: LabelSelector
    cpu_millis: int
    memory_bytes: int | None
    shares: dict[str, int] = field(default_factory=dict)  # member name -> confirmed share
    waiting: dict[str, str] = field(default_factory=dict)  # process name -> reason
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def ref(self) -> dict[str, Any]:
        return object_ref("ClusterCgroup", self.namespace, self.name, self.uid)

    @classmethod
    def from_object(cls, obj: ClusterCgroup) -> Budget:
        memory = obj.spec.memory
        return cls(
            namespace=obj.metadata.namespace,
            name=obj.metadata.name,
            uid=obj.metadata.uid,
            generation=obj.metadata.generation,
            selector=obj.spec.selector,
            cpu_millis=obj.spec.cpu.milli_value(),
            memory_bytes=memory.value() if memory is not None else None,
        )


class BudgetBook:
    def __init__(self, processes: ProcessBook, lease_seconds: float = 10.0) -> None:
        self.processes = processes
        self.lease_seconds = lease_seconds
        self._budgets: dict[Key, Budget] = {}

    def __iter__(self) -> Iterator[Budget]:
        return iter(list(self._budgets.values()))

    def get(self, key: Key) -> Budget | None:
        return self._budgets.get(key)

    def upsert(self, obj: ClusterCgroup) -> Budget:
        fresh = Budget.from_object(obj)
        known = self._budgets.get(fresh.key)
        if known is not None and known.uid == fresh.uid:
            fresh.shares, fresh.waiting = known.shares, known.waiting
            fresh.written, fresh.written_at = known.written, known.written_at
        self._budgets[fresh.key] = fresh
        return fresh

    def forget(self, key: Key) -> None:
        self._budgets.pop(key, None)

    def budget_of(self, info: ProcessInfo) -> tuple[Key, Budget | None] | None:
        """The process's budget: named in its spec (which may not exist yet), else the
        first, by name, whose selector matches its labels; None: not a member."""
        named = info.spec.cluster_cgroup
        if named:
            key = (info.namespace, named)
            return key, self._budgets.get(key)
        for key in sorted(self._budgets):
            budget = self._budgets[key]
            if key[0] == info.namespace and budget.selector.matches(info.labels):
                return key, budget
        return None

    def members(self, budget: Budget) -> list[ProcessInfo]:
        out = []
        for info in self.processes:
            if info.namespace != budget.namespace:
                continue
            found = self.budget_of(info)
            if found is not None and found[1] is budget:
                out.append(info)
        return out

    # ----- the BudgetPolicy (processes/admission.py) ---------------------------

    def admit(self, info: ProcessInfo) -> tuple[str, str] | None:
        found = self.budget_of(info)
        if found is None:
            return None
        key, budget = found
        if budget is None:
            return (
                "ClusterCgroupNotFound",
                f"waiting for ClusterCgroup {key[1]} (named in spec.clusterCgroup) to exist",
            )
        budget.waiting.pop(info.name, None)
        if budget.memory_bytes is None:
            return None
        held = {m.name: m.request.memory_bytes for m in self.members(budget) if m.placed}
        held.pop(info.name, None)
        asks = info.request.memory_bytes
        fits, total = admit_memory(budget.memory_bytes, held, asks)
        if fits:
            return None
        message = (
            f"ClusterCgroup {budget.name} memory budget {format_bytes_approx(budget.memory_bytes)}"
            f": its {len(held)} running members hold {format_bytes_approx(total)}, this process "
            f"asks {format_bytes_approx(asks)}; it starts when enough is released"
        )
        budget.waiting[info.name] = message
        return "MemoryBudgetExceeded", message

    def cpu_share(self, info: ProcessInfo) -> int | None:
        """A member about to start is granted what the others leave unallocated: the
        next interval evens it out. When they hold it all, it starts at the minimum
        share (10m, the least CFS enforces): the budget's one overrun, by 10m, until
        that interval."""
        found = self.budget_of(info)
        if found is None or found[1] is None:
            return None
        budget = found[1]
        own = info.request.cpu_millis
        if info.name not in budget.shares:
            if info.held_cpu is not None:  # running already (e.g. after an operator restart)
                budget.shares[info.name] = info.held_cpu
            else:
                others = sum(v for n, v in budget.shares.items() if n != info.name)
                budget.shares[info.name] = min(
                    own, max(MIN_SHARE_MILLIS, budget.cpu_millis - others)
                )
        return min(own, budget.shares[info.name])

    def start_lease(self, info: ProcessInfo) -> pb.Lease | None:
        """If the operator is gone before the member's first interval, its node still
        falls back to the safe share."""
        found = self.budget_of(info)
        if found is None or found[1] is None:
            return None
        budget = found[1]
        # Every member not over, placed or not: the fallback must be safe even when
        # the others start under their own leases before the first split.
        members = [m for m in self.members(budget) if m.active]
        holders = len(members) + (info not in members)
        own = info.request.cpu_millis
        return pb.Lease(
            seconds=self.lease_seconds,
            fallback=pb.Resources(cpu_millis=fallback_share(budget.cpu_millis, holders, own)),
        )
