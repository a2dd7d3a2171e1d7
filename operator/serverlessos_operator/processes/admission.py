"""What a process's budget says about it. budgets/ implements this for ClusterCgroups;
the process controllers ask through it, so they need not know what a budget is."""

from __future__ import annotations

from typing import Protocol

from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .book import ProcessInfo


class BudgetPolicy(Protocol):
    def admit(self, info: ProcessInfo) -> tuple[str, str] | None:
        """(reason, message) if the process must wait for its budget, else None."""
        ...

    def cpu_share(self, info: ProcessInfo) -> int | None:
        """The CPU limit its budget gives it; None: it has no budget (its own limit)."""
        ...

    def start_lease(self, info: ProcessInfo) -> pb.Lease | None:
        """The lease it starts under (a budget member's safe fallback), if any."""
        ...


class NoBudgets:
    """Every process on its own limits."""

    def admit(self, info: ProcessInfo) -> tuple[str, str] | None:
        return None

    def cpu_share(self, info: ProcessInfo) -> int | None:
        return None

    def start_lease(self, info: ProcessInfo) -> pb.Lease | None:
        return None
