"""Domain errors to gRPC status codes (the only place that maps them), and the
wrapper every unary handler goes through: map the errors, time the call."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from ..errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
)
from ..observe.metrics import Metrics

log = logging.getLogger(__name__)

CODES: dict[type[AgentError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


class Timed(Protocol):
    """A servicer whose calls are timed into its metrics."""

    metrics: Metrics


S = TypeVar("S", bound=Timed)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def code_for(exc: AgentError) -> grpc.StatusCode:
    """The status code of a domain error: its own class's, or the nearest base's."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.UNKNOWN


def internal_error(exc: Exception) -> str:
    """The message of an error the agent did not expect (a bug, or the machine)."""
    return f"internal error in the agent: {exc!r}"


def unary(method: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
    """Map domain errors to status codes and time the call."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except AgentError as exc:
            code = code_for(exc)
            await context.abort(code, str(exc))
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method.__name__)
            await context.abort(code, internal_error(exc))
        finally:
            self.metrics.rpc_duration.labels(method.__name__, code.name).observe(
                time.perf_counter() - started
            )
        raise AssertionError("unreachable")

    return wrapper
