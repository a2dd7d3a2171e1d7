"""Every agent's latest sample, polled together: the ledger's signals (placement and
rebalancing), each process's figures (budgets' demand), and status.usage.

An agent that does not answer is skipped: its signals age and turn stale (unknown,
not idle). One whose answer cannot be used is reported on its ServerlessNode and
backed off, while the others are polled as usual.
"""

from __future__ import annotations

import asyncio
import functools
import time

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import format_bytes_approx

from ..api.meta import object_ref
from ..api.v1alpha1 import Usage
from ..infra.agents import AgentPool, AgentUnavailable
from ..infra.events import EventSink
from ..infra.isolation import Failure, Isolation
from ..scheduling.pressure import Signals
from .book import Figures, ProcessBook


def signals_from(stats: pb.NodeStats, now: float) -> Signals:
    """An agent's sample as the ledger keeps it, dated on our clock by its age."""
    age = max(0.0, time.time() - stats.time.ToMilliseconds() / 1000) if stats.time.seconds else 0
    return Signals(
        at=now - age,
        cpu_psi=stats.cpu_pressure.some_avg10,
        memory_psi=stats.memory_pressure.some_avg10,
        io_psi=stats.io_pressure.some_avg10,
        cpu_used_millis=stats.cpu_usage_cores * 1000,
        memory_used_bytes=stats.memory_used_bytes
        or max(0, stats.memory_total_bytes - stats.memory_available_bytes),
        network_bytes_per_second=stats.network_bytes_per_second,
        network_capacity_bytes_per_second=stats.network_capacity_bytes_per_second,
    )


def usage_moved(old: Usage | None, cpu_millis: int, memory_bytes: int) -> bool:
    """Worth a status write: first figures, or CPU off by 20m / 20 %, memory by 10 %.
    (Every jitter would be a write per process per interval: API load for nothing.)"""
    if old is None or not old.cpu or not old.memory:
        return True
    cpu_old = old.cpu.milli_value()
    if abs(cpu_millis - cpu_old) > max(20, cpu_old * 0.2):
        return True
    mem_old = old.memory.value()
    return abs(memory_bytes - mem_old) > mem_old * 0.1


class UsagePoller:
    def __init__(
        self,
        book: ProcessBook,
        agents: AgentPool,
        events: EventSink,
        isolation: Isolation[str] | None = None,
    ) -> None:
        self.book = book
        self.agents = agents
        self.events = events
        self.isolation: Isolation[str] = isolation or Isolation()

    async def poll(self) -> None:
        await asyncio.gather(
            *(
                self.isolation.run(
                    node, f"polling node {node}", functools.partial(self._poll, node), self._report
                )
                for node in self.agents.nodes()
                if self.isolation.due(node)
            )
        )

    async def _report(self, failure: Failure) -> None:
        node = failure.what.removeprefix("polling node ")
        self.events.post(
            object_ref("ServerlessNode", "", node, ""), "Warning", "PollFailed", failure.message
        )

    async def _poll(self, node: str) -> None:
        try:
            stats = await self.agents.stub(node).GetNodeStats(pb.GetNodeStatsRequest(), timeout=5)
        except (AgentUnavailable, grpc.aio.AioRpcError):
            return  # its signals age and turn stale: unknown, not idle
        now = time.monotonic()
        ledger = self.book.ledger
        if node in ledger:
            ledger.report(node, signals_from(stats, now))
        for s in stats.processes:
            info = self.book.get((s.ref.namespace, s.ref.name))
            if info is None or info.node != node or info.deleting:
                continue
            last = info.stats
            if last is not None and now > last.at:
                info.throttled_rate = max(
                    0.0, (s.cpu_throttled_seconds - last.throttled_seconds) / (now - last.at)
                )
            info.stats = Figures(
                s.cpu_usage_cores, s.cpu_throttled_seconds, s.memory_current_bytes, now
            )
            cpu = round(s.cpu_usage_cores * 1000)
            if usage_moved(info.usage, cpu, s.memory_current_bytes):
                info.usage = Usage.model_validate(
                    {"cpu": f"{cpu}m", "memory": format_bytes_approx(s.memory_current_bytes)}
                )
                await self.book.kube.patch_process_status(
                    info.namespace, info.name, {"usage": info.usage.to_wire()}
                )
