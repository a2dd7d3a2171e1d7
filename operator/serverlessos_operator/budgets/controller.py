"""The ClusterCgroup controller: a tenant's budget held across nodes.

Every interval it splits each budget's CPU among the members by demand
(split.py), and pushes each member's share to its node's agent as a *lease*
(UpdateResources with a lease and a fallback): an agent that hears nothing
from the operator for a lease falls back to budget / members, a share that is
safe whatever the others hold. Shares going down are pushed before shares
going up, so the members never hold more than the budget between the two; a
member whose agent cannot be reached keeps (in the books) the share it last
confirmed, and the others split what is left.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import format_bytes_approx

from ..api.conditions import set_condition, wire
from ..api.meta import Condition
from ..infra.agents import AgentPool, AgentUnavailable
from ..infra.events import EventSink
from ..infra.isolation import Failure, Isolation
from ..infra.kube import StatusWriter
from ..processes.book import Key, ProcessBook, ProcessInfo
from .book import Budget, BudgetBook
from .split import Want, demand, fallback_share, split_cpu

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds between status writes that only move usage figures


class ClusterCgroupController:
    def __init__(
        self,
        book: BudgetBook,
        processes: ProcessBook,
        agents: AgentPool,
        kube: StatusWriter,
        events: EventSink,
        *,
        isolation: Isolation[Key] | None = None,
    ) -> None:
        self.book = book
        self.processes = processes
        self.agents = agents
        self.kube = kube
        self.events = events
        self.lease_seconds = book.lease_seconds
        self.isolation: Isolation[Key] = isolation or Isolation()

    async def step(self) -> None:
        """One interval: every budget on its own (a failing one is reported and backed
        off; the others are enforced as usual)."""
        for budget in self.book:
            if self.isolation.due(budget.key):
                await self.isolation.run(
                    budget.key,
                    f"enforcing ClusterCgroup {budget.namespace}/{budget.name}",
                    functools.partial(self._enforce, budget),
                    functools.partial(self._report, budget),
                )

    async def _report(self, budget: Budget, failure: Failure) -> None:
        self.events.post(budget.ref, "Warning", "EnforceFailed", failure.message)
        conditions = set_condition(
            _conditions(budget.written), "Enforced", False, "EnforceFailed", failure.message
        )
        budget.written = {}  # the next success writes the whole status again
        await self.kube.patch_cgroup_status(
            budget.namespace, budget.name, {"conditions": wire(conditions)}
        )

    async def _enforce(self, budget: Budget) -> None:
        # Placed members (starting ones too: they hold their first grant).
        members = [m for m in self.book.members(budget) if m.placed]
        names = {m.name for m in members}
        for gone in set(budget.shares) - names:
            del budget.shares[gone]
        for name in list(budget.waiting):
            info = self.processes.get((budget.namespace, name))
            if info is None or info.node is not None:
                budget.waiting.pop(name)
        wants: dict[str, Want] = {}
        for m in members:
            cap = m.request.cpu_millis
            if m.stats is None:  # no figures yet: assume it wants what it holds
                wanted = float(budget.shares.get(m.name, cap))
            else:
                wanted = demand(m.stats.cores, m.throttled_rate)
            wants[m.name] = Want(wanted, cap)
        shares = split_cpu(budget.cpu_millis, wants)
        fallback = {
            m.name: fallback_share(budget.cpu_millis, len(members), wants[m.name].cap_millis)
            for m in members
        }
        by_name = {m.name: m for m in members}
        # Down first, then up: in between, the members hold at most the budget. What a
        # member holds: the larger of what we granted and what its agent reported
        # (a lapsed lease's fallback may be above the grant).
        held = {m.name: max(budget.shares.get(m.name, 0), m.held_cpu or 0) for m in members}
        down = {n: v for n, v in shares.items() if v < held[n]}
        up = {n: v for n, v in shares.items() if n not in down}
        failed = await self._push(budget, by_name, down, fallback)
        if failed:
            # An unreachable member may still hold its old share until its lease
            # lapses: grant no increases this round, only renew what is held.
            log.warning(
                "ClusterCgroup %s/%s: no answer for %s; increases wait",
                budget.namespace,
                budget.name,
                ", ".join(sorted(failed)),
            )
            up = {n: budget.shares.get(n, fallback[n]) for n in up}
        await self._push(budget, by_name, up, fallback)
        await self._write_status(budget, members)

    async def _push(
        self,
        budget: Budget,
        by_name: dict[str, ProcessInfo],
        shares: dict[str, int],
        fallback: dict[str, int],
    ) -> set[str]:
        """Grant (or renew) each share as a lease; returns the names not reached."""

        async def one(name: str, share: int) -> str | None:
            info = by_name[name]
            assert info.node is not None
            request = pb.UpdateResourcesRequest(
                ref=pb.ProcessRef(namespace=info.namespace, name=info.name),
                resources=pb.Resources(cpu_millis=share, memory_bytes=info.request.memory_bytes),
                lease=pb.Lease(
                    seconds=self.lease_seconds,
                    fallback=pb.Resources(cpu_millis=fallback[name]),
                ),
            )
            try:
                held = await self.agents.stub(info.node).UpdateResources(request, timeout=5)
            except (AgentUnavailable, grpc.aio.AioRpcError) as exc:
                log.debug("lease for %s/%s on %s: %s", info.namespace, name, info.node, exc)
                return name
            budget.shares[name] = share
            info.held_cpu = held.spec.resources.cpu_millis
            return None

        results = await asyncio.gather(*(one(n, v) for n, v in shares.items()))
        return {r for r in results if r is not None}

    async def _write_status(self, budget: Budget, members: list[ProcessInfo]) -> None:
        per_node: dict[str, list[int]] = {}
        listed = []
        used_cpu = used_memory = 0.0
        for m in sorted(members, key=lambda m: m.name):
            assert m.node is not None
            share = budget.shares.get(m.name, 0)
            mem = m.request.memory_bytes
            totals = per_node.setdefault(m.node, [0, 0, 0])
            totals[0] += 1
            totals[1] += share
            totals[2] += mem
            cores = m.stats.cores if m.stats else 0.0
            used_cpu += cores
            used_memory += m.stats.memory_bytes if m.stats else 0
            listed.append(
                {
                    "name": m.name,
                    "node": m.node,
                    "phase": m.phase or "",
                    "cpu": f"{share}m",
                    "memory": format_bytes_approx(mem),
                    "cpuUsage": f"{round(cores * 1000 / 10) * 10}m",
                }
            )
        total = sum(budget.shares.get(m.name, 0) for m in members)
        message = (
            f"{len(members)} members on {len(per_node)} nodes hold {total}m of "
            f"{budget.cpu_millis}m CPU"
        )
        status: dict[str, Any] = {
            "members": listed,
            "nodes": [
                {"node": n, "members": c, "cpu": f"{cpu}m", "memory": format_bytes_approx(mem)}
                for n, (c, cpu, mem) in sorted(per_node.items())
            ],
            "usage": {
                "cpu": f"{round(used_cpu * 1000 / 10) * 10}m",
                "memory": format_bytes_approx(int(used_memory)),
            },
            "memberCount": len(members),
            "waiting": sorted(budget.waiting),
            "observedGeneration": budget.generation,
        }
        now = time.monotonic()
        if _shape(status) == _shape(budget.written) and now - budget.written_at < STATUS_EVERY:
            return  # only usage figures moved: written every STATUS_EVERY seconds
        status["conditions"] = wire(
            set_condition(
                _conditions(budget.written),
                "Enforced",
                True,
                "SharesLeased" if members else "NoMembers",
                message,
            )
        )
        if await self.kube.patch_cgroup_status(budget.namespace, budget.name, status):
            budget.written, budget.written_at = status, now


def _shape(status: Mapping[str, Any]) -> Any:
    """A status without its usage figures (which move every interval)."""
    return (
        [{k: v for k, v in m.items() if k != "cpuUsage"} for m in status.get("members", [])],
        status.get("nodes"),
        status.get("waiting"),
        status.get("observedGeneration"),
    )


def _conditions(written: Mapping[str, Any]) -> list[Condition]:
    return [Condition.model_validate(c) for c in written.get("conditions", [])]
