"""Post-copy memory between two agents over mutual TLS.

CRIU's page server (on the source) and lazy-pages daemon (on the target) speak plain
TCP with no authentication: whoever reaches the port reads the process's memory. With
TLS the agents keep CRIU off the network. Each hands its CRIU one end of a socketpair
(PageServerInfo.fd on the source, --ps-socket on the target) and carries the bytes
over one TLS connection between the two agents: the source accepts it only from the
ticket's target node, the target dials it only to the ticket's source node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from cryptography import x509
from serverlessos.auth import identity
from serverlessos.auth.identity import Identity
from serverlessos.auth.pki import CertificateError, identity_of

from ..auth.credentials import TlsFiles
from ..errors import FailedPrecondition

log = logging.getLogger(__name__)

CHUNK = 1 << 18
CONNECT_TIMEOUT = 10.0


class Tunnel:
    """One TLS connection carried to and from CRIU's end of a socketpair."""

    def __init__(self) -> None:
        ours, self.criu_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ours = ours
        self._pumps: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.connected = asyncio.Event()

    def release_criu_end(self) -> None:
        """Once CRIU holds its copy: ours would keep the socket open past CRIU's end."""
        self.criu_end.close()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local_reader, local_writer = await asyncio.open_connection(sock=self._ours)
        self._pumps = [
            asyncio.create_task(_pump(reader, local_writer)),
            asyncio.create_task(_pump(local_reader, writer)),
        ]
        self.connected.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            with contextlib.suppress(BaseException):
                await pump
        self._ours.close()
        self.criu_end.close()

    # ----- the source: serve the target's one connection --------------------

    async def serve(self, tls: TlsFiles, host: str, peer: Identity) -> str:
        """Listen on `host` for `peer` (the ticket's target); returns host:port."""

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            caller = _peer_of(writer)
            if caller != peer or self.connected.is_set():
                log.warning("page tunnel: refused %s (it serves %s, once)", caller, peer)
                writer.close()
                return
            assert self._server is not None
            self._server.close()  # one connection: nobody else gets in after it
            await self._carry(reader, writer)

        self._server = await asyncio.start_server(accept, host, 0, ssl=tls.ssl_context(server=True))
        port = self._server.sockets[0].getsockname()[1]
        return f"{host}:{port}"

    # ----- the target: dial the source ---------------------------------------

    async def dial(self, tls: TlsFiles, address: str, source_node: str) -> None:
        """Connect to the source's tunnel, which must be `source_node`'s agent."""
        host, _, port = address.rpartition(":")
        name = identity.node(source_node).tls_name
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host.strip("[]"),
                    int(port),
                    ssl=tls.ssl_context(server=False),
                    server_hostname=name,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, ValueError, ssl.SSLError, TimeoutError) as exc:
            raise FailedPrecondition(
                f"the source's page tunnel {address} ({name}): {exc or type(exc).__name__}"
            ) from None
        await self._carry(reader, writer)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (CRIU ends a session by closing)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (OSError, ssl.SSLError) as exc:
        log.info("page tunnel closed: %s", exc)
        writer.close()


def _peer_of(writer: asyncio.StreamWriter) -> Identity | None:
    """The verified client certificate's identity (the handshake checked its CA)."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    try:
        return identity_of(x509.load_der_x509_certificate(der))
    except (CertificateError, ValueError):
        return None
