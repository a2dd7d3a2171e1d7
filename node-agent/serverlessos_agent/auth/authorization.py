"""Which identity may call which RPC, checked on every call before the handler runs.

- the Agent API: only the operator (it alone decides what runs where);
- ReceiveCheckpoint: any node of the cluster (the handler then holds the sender to
  the operator's ticket for that migration: its source, this target, that process);
- health and reflection: any caller with a certificate of the cluster CA.

A call outside this is PERMISSION_DENIED, naming the caller. With mutual TLS every
caller has a verified identity; an agent started with --insecure has no callers to
tell apart and checks nothing (tests, a workstation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from serverlessos.auth.identity import Identity, peer_identity

AGENT = "/serverlessos.agent.v1alpha1.Agent/"
FROM_PEERS = {AGENT + "ReceiveCheckpoint"}
FROM_ANYONE = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")
if TYPE_CHECKING:  # generic only in the stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def allowed(method: str, caller: Identity | None) -> bool:
    if caller is None:
        return False
    if method.startswith(FROM_ANYONE):
        return True
    if method in FROM_PEERS:
        return caller.kind == "node"
    return method.startswith(AGENT) and caller.is_operator


def refusal(method: str, caller: Identity | None) -> str:
    who = str(caller) if caller is not None else "a caller without a cluster identity"
    name = method.rsplit("/", 1)[-1]
    if method in FROM_PEERS:
        return f"{name} takes checkpoints only from the cluster's agents, not from {who}"
    return f"only the operator may call {name}; this call came from {who}"


class Authorization(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        return _guarded(handler, details.method)


async def _check(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    caller = peer_identity(context.auth_context())
    if not allowed(method, caller):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal(method, caller))


def _guarded(handler: Handler, method: str) -> Handler:
    """The same handler, checking the caller first (all four kinds of calls). The grpc
    stubs type handlers as synchronous; on an aio server they are coroutines."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await _check(method, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await _check(method, context)
            async for reply in inner_us(request, context):
                yield reply

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await _check(method, context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        await _check(method, context)
        async for reply in inner_ss(requests, context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)
