"""The agent's grpc.aio server: its API, grpc.health.v1 and server reflection, and
the keepalive settings that let the operator notice a dead node."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc

from ..auth.authorization import Authorization
from ..auth.credentials import TlsFiles

SERVICE = pb.DESCRIPTOR.services_by_name["Agent"].full_name

OPTIONS = [
    # Let clients (the operator) ping idle streams to detect a dead node.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


# Calls in flight at once, beyond which new ones are RESOURCE_EXHAUSTED (a flood of
# requests cannot take every thread and every byte of the agent).
MAX_CONCURRENT_RPCS = 512


class AgentServer:
    """With `tls`: mutual TLS on the port and every call authorized by its caller's
    identity (auth/). Without: plaintext, anyone who reaches the port may call anything
    (the agent was started with --insecure)."""

    def __init__(self, servicer: pb_grpc.AgentServicer, tls: TlsFiles | None) -> None:
        self._tls = tls
        self._server = grpc.aio.server(
            options=OPTIONS,
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
            interceptors=[Authorization()] if tls is not None else [],
        )
        pb_grpc.add_AgentServicer_to_server(servicer, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    def bind(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: a free one); the bound port, 0 if it could not."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self._tls is None:
            return self._server.add_insecure_port(address)
        return self._server.add_secure_port(address, self._tls.server_credentials())

    async def start(self) -> None:
        await self._server.start()
        status = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", status)
        await self._health.set(SERVICE, status)

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace=grace)
