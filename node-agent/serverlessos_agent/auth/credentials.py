"""The agent's TLS credentials: a directory holding ca.pem (the cluster CA), cert.pem
and key.pem (this node's identity, issued by that CA).

The files are read again whenever they change (a renewed certificate is used from the
next handshake on, without a restart), and checked each time: a certificate that is
not the CA's, or names another node, is refused and the last good one is kept.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from serverlessos.auth import identity
from serverlessos.auth.pki import CA, CertificateError, load_cert, load_key
from serverlessos.auth.tls import load_identity

from ..errors import FailedPrecondition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Material:
    ca: bytes
    cert: bytes
    key: bytes


class TlsFiles:
    def __init__(self, directory: Path, node_name: str) -> None:
        self.directory = directory
        self.node = identity.node(node_name)
        self._stamp: tuple[int, ...] = ()
        self.current = self._read()  # raises FailedPrecondition: refuse to start without

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return (self.directory / "ca.pem", self.directory / "cert.pem", self.directory / "key.pem")

    def _read(self) -> Material:
        ca_path, cert_path, key_path = self.paths
        try:
            material = Material(ca_path.read_bytes(), cert_path.read_bytes(), key_path.read_bytes())
            self._stamp = tuple(p.stat().st_mtime_ns for p in self.paths)
            ca = load_cert(material.ca)
            cert = load_cert(material.cert)
            key = load_key(material.key)
        except (OSError, CertificateError, ValueError) as exc:
            raise FailedPrecondition(f"TLS credentials in {self.directory}: {exc}") from None
        if cert.public_key() != key.public_key():
            raise FailedPrecondition(f"{cert_path} and {key_path} are not one pair")
        try:
            named = CA(key, ca).verify(cert)  # the CA's key is not needed to verify
        except CertificateError as exc:
            raise FailedPrecondition(f"{cert_path}: {exc}") from None
        if named != self.node:
            raise FailedPrecondition(f"{cert_path} is {named}, not this node's ({self.node})")
        return material

    def refresh(self) -> bool:
        """Read the files again if they changed; True if new ones are in use."""
        try:
            stamp = tuple(p.stat().st_mtime_ns for p in self.paths)
        except OSError:
            return False
        if stamp == self._stamp:
            return False
        try:
            self.current = self._read()
        except FailedPrecondition as exc:
            log.error("keeping the TLS credentials in use: %s", exc)
            return False
        log.info("TLS credentials in %s renewed", self.directory)
        return True

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS: a client must present a certificate of the cluster CA."""

        def configuration() -> grpc.ServerCertificateConfiguration:
            m = self.current
            return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], m.ca)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            return configuration() if self.refresh() else None

        # The stubs type the fetcher without its None ("unchanged"), which grpc takes.
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
        return grpc.dynamic_ssl_server_credentials(
            configuration(), fetcher, require_client_authentication=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """To dial a peer agent as this node."""
        m = self.current
        return grpc.ssl_channel_credentials(m.ca, m.key, m.cert)

    def ssl_context(self, *, server: bool) -> ssl.SSLContext:
        """Mutual TLS outside gRPC (the post-copy page tunnel), with the credentials in
        use: the peer must show a certificate of the cluster CA; a client checks the
        server's name too."""
        self.refresh()
        m = self.current
        purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
        context = ssl.create_default_context(purpose, cadata=m.ca.decode())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        load_identity(context, m.cert, m.key)
        return context
