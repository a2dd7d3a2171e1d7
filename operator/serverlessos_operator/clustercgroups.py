"""The ClusterCgroup controller: a tenant's budget held across nodes.

Every interval it splits each budget's CPU among the members by demand
(quota.py), and pushes each member's share to its node's agent as a *lease*
(UpdateResources with a lease and a fallback): an agent that hears nothing
from the operator for a lease falls back to budget / members, a share that is
safe whatever the others hold. Shares going down are pushed before shares
going up, so the members never hold more than the budget between the two; a
member whose agent cannot be reached keeps (in the books) the share it last
confirmed, and the others split what is left.

Memory is admitted, not split (see quota.py): a process that would take the
members' memory limits past the budget waits in Pending, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import format_bytes_approx

from .agents import AgentUnavailable
from .controller import Key, ProcessController, ProcessInfo
from .labels import matches
from .process import cpu_millis, memory_bytes, request_of, set_condition
from .quota import MIN_SHARE_MILLIS, Want, admit_memory, demand, fallback_share, split_cpu

log = logging.getLogger(__name__)

STATUS_EVERY = 10.0  # seconds between status writes that only move usage figures


@dataclass
class Budget:
    namespace: str
    name: str
    uid: str
    generation: int
    selector: dict[str, Any]
    cpu_millis: int
    memory_bytes: int | None
    shares: dict[str, int] = field(default_factory=dict)  # member name -> confirmed share
    waiting: dict[str, str] = field(default_factory=dict)  # process name -> reason
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Budget:
        meta, spec = body["metadata"], body.get("spec") or {}
        memory = spec.get("memory")
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 0)),
            selector=dict(spec.get("selector") or {}),
            cpu_millis=cpu_millis(spec.get("cpu", "0")),
            memory_bytes=memory_bytes(memory) if memory not in (None, "") else None,
        )


class ClusterCgroups:
    def __init__(self, ctrl: ProcessController, lease_seconds: float = 10.0) -> None:
        self.ctrl = ctrl
        self.lease_seconds = lease_seconds
        self.budgets: dict[Key, Budget] = {}
        ctrl.admit = self.admit
        ctrl.cpu_share = self.cpu_share
        ctrl.start_lease = self.start_lease

    # ----- the model ----------------------------------------------------------

    def upsert(self, body: Mapping[str, Any]) -> None:
        fresh = Budget.from_body(body)
        known = self.budgets.get(fresh.key)
        if known is not None and known.uid == fresh.uid:
            fresh.shares, fresh.waiting = known.shares, known.waiting
            fresh.written, fresh.written_at = known.written, known.written_at
        self.budgets[fresh.key] = fresh

    def forget(self, key: Key) -> None:
        self.budgets.pop(key, None)

    def budget_of(self, info: ProcessInfo) -> tuple[Key, Budget | None] | None:
        """The process's budget: named in its spec (which may not exist yet), else the
        first, by name, whose selector matches its labels; None: not a member."""
        named = info.spec.get("clusterCgroup")
        if named:
            key = (info.namespace, named)
            return key, self.budgets.get(key)
        for key in sorted(self.budgets):
            budget = self.budgets[key]
            if key[0] == info.namespace and matches(budget.selector, info.labels):
                return key, budget
        return None

    def members(self, budget: Budget) -> list[ProcessInfo]:
        out = []
        for info in self.ctrl.processes.values():
            if info.namespace != budget.namespace:
                continue
            found = self.budget_of(info)
            if found is not None and found[1] is budget:
                out.append(info)
        return out

    # ----- hooks the process controller calls ---------------------------------

    def admit(self, info: ProcessInfo) -> tuple[str, str] | None:
        """(reason, message) if the process must wait, else None."""
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
        held = {m.name: request_of(m.spec).memory_bytes for m in self.members(budget) if m.placed}
        held.pop(info.name, None)
        asks = request_of(info.spec).memory_bytes
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
        """The CPU limit the process's budget gives it (None: it has no budget). A member
        about to start is granted what the others leave unallocated: the next interval
        evens it out. When they hold it all, it starts at the minimum share (10m, the
        least CFS enforces): the budget's one overrun, by 10m, until that interval."""
        found = self.budget_of(info)
        if found is None or found[1] is None:
            return None
        budget = found[1]
        own = request_of(info.spec).cpu_millis
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
        """A member starts under a lease already: if the operator is gone before its
        first interval, its node still falls back to the safe share."""
        found = self.budget_of(info)
        if found is None or found[1] is None:
            return None
        budget = found[1]
        # Every member not over, placed or not: the fallback must be safe even when
        # the others start under their own leases before the first split.
        members = [m for m in self.members(budget) if m.active]
        holders = len(members) + (info not in members)
        own = request_of(info.spec).cpu_millis
        return pb.Lease(
            seconds=self.lease_seconds,
            fallback=pb.Resources(cpu_millis=fallback_share(budget.cpu_millis, holders, own)),
        )

    # ----- every interval -----------------------------------------------------

    async def step(self) -> None:
        for budget in list(self.budgets.values()):
            try:
                await self._enforce(budget)
            except Exception:
                log.exception("enforcing ClusterCgroup %s/%s failed", *budget.key)

    async def _enforce(self, budget: Budget) -> None:
        # Placed members (starting ones too: they hold their first grant).
        members = [m for m in self.members(budget) if m.placed]
        names = {m.name for m in members}
        for gone in set(budget.shares) - names:
            del budget.shares[gone]
        for name in list(budget.waiting):
            info = self.ctrl.processes.get((budget.namespace, name))
            if info is None or info.node is not None:
                budget.waiting.pop(name)
        wants: dict[str, Want] = {}
        for m in members:
            cap = request_of(m.spec).cpu_millis
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
                resources=pb.Resources(
                    cpu_millis=share, memory_bytes=request_of(info.spec).memory_bytes
                ),
                lease=pb.Lease(
                    seconds=self.lease_seconds,
                    fallback=pb.Resources(cpu_millis=fallback[name]),
                ),
            )
            try:
                held = await self.ctrl.pool.stub(info.node).UpdateResources(request, timeout=5)
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
            mem = request_of(m.spec).memory_bytes
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
        status["conditions"] = set_condition(
            budget.written.get("conditions", []),
            "Enforced",
            True,
            "SharesLeased" if members else "NoMembers",
            message,
        )
        if await self.ctrl.kube.patch_cgroup_status(budget.namespace, budget.name, status):
            budget.written, budget.written_at = status, now


def _shape(status: Mapping[str, Any]) -> Any:
    """A status without its usage figures (which move every interval)."""
    return (
        [{k: v for k, v in m.items() if k != "cpuUsage"} for m in status.get("members", [])],
        status.get("nodes"),
        status.get("waiting"),
        status.get("observedGeneration"),
    )
