"""gRPC clients for the node agents: one channel and one event stream per agent.

Each agent's WatchProcesses stream is followed from the revision of an initial
list; on any error the pool reconnects and resumes from the last sequence
number it saw, re-listing only when the agent no longer has that far back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity

log = logging.getLogger(__name__)

# Pings find an agent that stopped answering (a frozen or partitioned node) even
# when its stream is idle; the agent's server allows them (see its rpc/server.py).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

OnEvent = Callable[[str, pb.Process], Awaitable[None]]
OnSync = Callable[[str, list[pb.Process]], Awaitable[None]]


class AgentUnavailable(Exception):
    """No endpoint is known for the node, or its agent does not answer."""


@dataclass
class _Agent:
    endpoint: str
    channel: grpc.aio.Channel
    stub: pb_grpc.AgentAsyncStub
    task: asyncio.Task[None] | None = None
    seq: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class AgentPool:
    """With `credentials` (the operator's identity), every agent is dialled with mutual
    TLS by its node's TLS name: the connection reaches that node's agent or fails its
    handshake, whatever address the node's ServerlessNode gives. Without: plaintext."""

    def __init__(
        self,
        on_event: OnEvent,
        on_sync: OnSync,
        call_timeout: float = 15.0,
        credentials: Callable[[], grpc.ChannelCredentials] | None = None,
    ) -> None:
        self.on_event = on_event
        self.on_sync = on_sync
        self.call_timeout = call_timeout
        self.credentials = credentials
        self._agents: dict[str, _Agent] = {}

    def set_endpoint(self, node: str, endpoint: str) -> None:
        current = self._agents.get(node)
        if current is not None and current.endpoint == endpoint:
            return
        if current is not None:
            self._close(node)
        channel = self._channel(node, endpoint)
        agent = _Agent(endpoint, channel, pb_grpc.AgentStub(channel))  # an AgentAsyncStub
        self._agents[node] = agent
        agent.task = asyncio.get_running_loop().create_task(self._follow(node, agent))

    def _channel(self, node: str, endpoint: str) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        name = identity.node(node).tls_name
        return grpc.aio.secure_channel(
            endpoint,
            self.credentials(),
            options=[*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", name)],
        )

    def reconnect_all(self) -> None:
        """New channels for every agent (e.g. with a renewed certificate)."""
        for node in list(self._agents):
            self.resync(node)

    def resync(self, node: str) -> None:
        """Follow the node's agent afresh, from a new list (e.g. after it was lost)."""
        agent = self._agents.get(node)
        if agent is not None:
            self._close(node)
            self.set_endpoint(node, agent.endpoint)

    def remove(self, node: str) -> None:
        if node in self._agents:
            self._close(node)

    def _close(self, node: str) -> None:
        agent = self._agents.pop(node)
        if agent.task is not None:
            agent.task.cancel()
        asyncio.get_running_loop().create_task(agent.channel.close())

    def stub(self, node: str) -> pb_grpc.AgentAsyncStub:
        try:
            return self._agents[node].stub
        except KeyError:
            raise AgentUnavailable(f"no agent endpoint known for node {node}") from None

    def nodes(self) -> list[str]:
        return list(self._agents)

    async def _follow(self, node: str, agent: _Agent) -> None:
        delay = 0.5
        resync = True
        while True:
            try:
                if resync:
                    listed = await agent.stub.ListProcesses(
                        pb.ListProcessesRequest(), timeout=self.call_timeout
                    )
                    agent.seq = listed.revision
                    await self.on_sync(node, list(listed.processes))
                    resync = False
                agent.connected.set()
                stream = agent.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=agent.seq))
                async for event in stream:
                    agent.seq = event.seq
                    delay = 0.5
                    try:
                        await self.on_event(node, event.process)
                    except Exception:
                        log.exception("handling an event of node %s failed", node)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                agent.connected.clear()
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    resync = True  # the agent no longer has our position: list again
                else:
                    log.info("agent %s: %s; reconnecting", node, exc.code().name)
            except Exception:
                agent.connected.clear()
                log.exception("following agent %s failed", node)
                resync = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        for node in list(self._agents):
            agent = self._agents.pop(node)
            if agent.task is not None:
                agent.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await agent.task
            await agent.channel.close()
