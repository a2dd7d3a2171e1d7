"""Deleting a process: stop it on its node; done when the agent confirms it is gone."""

from __future__ import annotations

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..infra.agents import AgentPool, AgentUnavailable
from ..nodes.book import NodeBook
from .book import Key, ProcessBook
from .retry import Retry


class ProcessDeleter:
    def __init__(self, book: ProcessBook, nodes: NodeBook, agents: AgentPool) -> None:
        self.book = book
        self.nodes = nodes
        self.agents = agents

    async def delete(self, key: Key, uid: str, node_in_status: str | None) -> None:
        """Raises Retry while the agent is unreachable and its node not lost for good.
        `node_in_status`: where the object's status says it runs (what an operator that
        never took the object into its books, e.g. after a restart, knows)."""
        known = self.book.get(key)
        node = known.node if known is not None and known.uid == uid else node_in_status
        if known is not None:
            known.deleting = True
        async with self.book.lock(key):
            if node is not None and self.nodes.reachable(node):
                ref = pb.ProcessRef(namespace=key[0], name=key[1])
                try:
                    current = await self.agents.stub(node).GetProcess(
                        pb.GetProcessRequest(ref=ref), timeout=15
                    )
                    if current.spec.owner.uid == uid:
                        await self.agents.stub(node).StopProcess(
                            pb.StopProcessRequest(ref=ref), timeout=60
                        )
                except AgentUnavailable as exc:
                    raise Retry(str(exc)) from exc
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise Retry(f"agent on {node}: {exc.code().name}") from exc
        self.book.forget(key, uid)
