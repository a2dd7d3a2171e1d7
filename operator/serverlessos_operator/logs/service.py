"""The log API's parts, wired: the front proxy's configuration from the API server, the
serving certificate (and the APIService's caBundle), the HTTPS server, renewal."""

from __future__ import annotations

import logging
import ssl
from typing import Any, Protocol

from serverlessos.auth.pki import CA
from serverlessos.auth.tls import load_identity, server_context

from .access import LogAccess
from .discovery import APISERVICE
from .front_proxy import CONFIG_MAP, FrontProxy
from .reader import ProcessLogs
from .server import LogServer
from .serving import ServingCertificate

log = logging.getLogger(__name__)


class LogApiObjects(Protocol):
    async def read_config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    async def review_access(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    async def set_apiservice_ca(self, name: str, ca_pem: bytes) -> bool: ...


class LogService:
    def __init__(
        self, kube: LogApiObjects, logs: ProcessLogs, service: str, namespace: str
    ) -> None:
        self.kube = kube
        self.logs = logs
        self.service = service
        self.namespace = namespace
        self.certificate: ServingCertificate | None = None
        self._context: ssl.SSLContext | None = None
        self._server: LogServer | None = None

    async def start(self, ca: CA, port: int, host: str = "0.0.0.0") -> bool:
        """Serve on `port`; False (logged) when the API server does not aggregate, the
        chart made no APIService (nothing would route to it), or it cannot start: the
        rest of the operator runs on without it."""
        try:
            return await self._start(ca, port, host)
        except Exception:
            log.exception("the log API could not start; `kubectl sos logs` will not work")
            return False

    async def _start(self, ca: CA, port: int, host: str) -> bool:
        data = await self.kube.read_config_map(*CONFIG_MAP)
        front_proxy = FrontProxy.from_config_map(data or {})
        if front_proxy is None:
            log.warning(
                "the API server has no front proxy (%s/%s): no log API, "
                "`kubectl sos logs` will not work",
                *CONFIG_MAP,
            )
            return False
        if not await self.kube.set_apiservice_ca(APISERVICE, ca.cert_pem):
            log.warning("no APIService %s: no log API", APISERVICE)
            return False
        self.certificate = ServingCertificate(ca, self.service, self.namespace)
        # Discovery is public, as in the API server; the log needs the proxy's certificate.
        self._context = server_context(
            self.certificate.cert_pem,
            self.certificate.key_pem,
            front_proxy.client_ca,
            client_certificate=ssl.CERT_OPTIONAL,
        )
        self._server = LogServer(front_proxy, LogAccess(self.kube.review_access), self.logs)
        await self._server.start(host, port, self._context)
        log.info("log API %s serving on port %d", APISERVICE, port)
        return True

    async def renew(self) -> None:
        """A new serving certificate when due; new handshakes use it."""
        if self.certificate is None or self._context is None:
            return
        if self.certificate.renew_if_due():
            load_identity(self._context, self.certificate.cert_pem, self.certificate.key_pem)
            log.info("renewed the log API's serving certificate")

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
