"""Live resizing: changed spec.resources pushed to the running process's cgroup."""

from __future__ import annotations

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.conditions import set_condition
from ..infra.agents import AgentPool, AgentUnavailable
from ..infra.events import EventSink
from .admission import BudgetPolicy
from .agent_view import agent_resources
from .book import Key, ProcessBook

RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ProcessResizer:
    def __init__(
        self, book: ProcessBook, agents: AgentPool, events: EventSink, budgets: BudgetPolicy
    ) -> None:
        self.book = book
        self.agents = agents
        self.events = events
        self.budgets = budgets

    async def apply(self, key: Key) -> None:
        """Success or refusal (e.g. memory below what the process uses) shows in the
        ResourcesApplied condition; an unreachable agent is retried by the waiting loop.
        A budget member's CPU is its budget's to set: the limit is the smaller of its
        share and its own request."""
        info = self.book.get(key)
        if info is None:
            return
        async with self.book.lock(key):
            if not info.resize_pending or info.node is None or info.deleting:
                return
            if not info.active:
                info.resize_pending = False
                return
            share = self.budgets.cpu_share(info)
            own = info.spec.resources.cpu.milli_value()
            resources = agent_resources(info.spec, None if share is None else min(share, own))
            ref = pb.ProcessRef(namespace=info.namespace, name=info.name)
            wanted = f"cpu {info.spec.resources.cpu}, memory {info.spec.resources.memory}"
            try:
                await self.agents.stub(info.node).UpdateResources(
                    pb.UpdateResourcesRequest(ref=ref, resources=resources), timeout=15
                )
            except AgentUnavailable:
                return  # retried
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRIED:
                    return  # retried
                info.resize_pending = False
                message = f"{wanted} refused by node {info.node}: {exc.details()}"
                self.events.post(info.ref, "Warning", "ResizeRefused", message)
                await self.book.patch(
                    info,
                    {
                        "conditions": set_condition(
                            info.conditions, "ResourcesApplied", False, "Refused", message
                        )
                    },
                )
                return
            info.resize_pending = False
            self.events.post(info.ref, "Normal", "Resized", f"{wanted} applied on {info.node}")
            await self.book.patch(
                info,
                {
                    "observedGeneration": info.generation,
                    "conditions": set_condition(
                        info.conditions, "ResourcesApplied", True, "Applied", wanted
                    ),
                },
            )
