"""A process's output from its node's agent (ReadLogs), as a stream of byte chunks; what
goes wrong before the first byte is a LogError with the HTTP code the API gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc

from ..infra.agents import AgentUnavailable
from ..processes.book import ProcessInfo

# How long the first chunk (or the agent's refusal) is awaited before the response
# starts anyway: a followed process may print nothing for a long time.
FIRST_CHUNK_WAIT = 2.0
CODES = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.PERMISSION_DENIED: 503,  # the agent refused the operator: not the user's
    grpc.StatusCode.UNAVAILABLE: 503,
}


class LogError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Processes(Protocol):
    def get(self, key: tuple[str, str]) -> ProcessInfo | None: ...


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    name: str
    tail_lines: int = 0  # 0: everything retained
    follow: bool = False


class LogStream:
    """The chunks of one ReadLogs call; close() cancels it (the reader went away)."""

    def __init__(self, call: Any, first: asyncio.Task[Any]) -> None:
        self._call = call
        self._next: asyncio.Task[Any] | None = first

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            read = self._next or asyncio.ensure_future(self._call.read())
            self._next = None
            try:
                message = await read
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return
                raise LogError(CODES.get(exc.code(), 500), exc.details() or "") from None
            if message is grpc.aio.EOF:
                return
            yield bytes(message.data)

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
        self._call.cancel()


class ProcessLogs:
    def __init__(self, processes: Processes, stub: Callable[[str], pb_grpc.AgentAsyncStub]) -> None:
        self.processes = processes
        self.stub = stub

    async def open(self, request: LogRequest) -> LogStream:
        info = self.processes.get((request.namespace, request.name))
        if info is None:
            raise LogError(
                404, f'serverlessprocesses "{request.name}" not found in {request.namespace}'
            )
        if info.node is None:
            raise LogError(400, f"{request.name} is not placed on a node yet")
        try:
            stub = self.stub(info.node)
        except AgentUnavailable as exc:
            raise LogError(503, str(exc)) from None
        call = stub.ReadLogs(
            pb.ReadLogsRequest(
                ref=pb.ProcessRef(namespace=request.namespace, name=request.name),
                tail_lines=request.tail_lines,
                follow=request.follow,
            ),
            timeout=None if request.follow else 30.0,
        )
        first = asyncio.ensure_future(call.read())
        await asyncio.wait({first}, timeout=FIRST_CHUNK_WAIT)
        failed = first.exception() if first.done() else None
        if isinstance(failed, grpc.aio.AioRpcError):
            raise LogError(
                CODES.get(failed.code(), 500),
                f"node {info.node}: {failed.details() or failed.code().name}",
            )
        return LogStream(call, first)
