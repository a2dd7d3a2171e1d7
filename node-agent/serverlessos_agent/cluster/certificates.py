"""The agent's certificate, from the cluster's operator, the way a kubelet gets its own:
a key made here (it never leaves the node) and a CertificateSigningRequest with signer
`serverlessos.io/agent`, which the operator signs only for the node the agent's
node-bound token names. The CA's certificate comes from ConfigMap serverlessos-ca.

The files go into the TLS directory (--tls-dir) that the agent's port reads
(auth/credentials.py): at start when there is no valid certificate for this node
there yet, and again at two thirds of its life.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from serverlessos.auth import identity
from serverlessos.auth.pki import (
    CertificateError,
    key_pem,
    load_cert,
    needs_renewal,
    new_key,
    new_request,
)
from serverlessos.files import atomic_write

from .api import api_client

log = logging.getLogger(__name__)

SIGNER = "serverlessos.io/agent"
CA_CONFIG_MAP = "serverlessos-ca"
POLL = 1.0


class CertificateRequestDenied(RuntimeError):
    """The operator refused this node's request (its reason is in the message)."""


class Certificates:
    def __init__(
        self, node_name: str, tls_dir: Path, kubeconfig: str | None, namespace: str
    ) -> None:
        self.node = identity.node(node_name)
        self.tls_dir = tls_dir
        self.namespace = namespace  # where the operator publishes the CA (its own)
        api = api_client(kubeconfig)
        self.csrs = client.CertificatesV1Api(api)
        self.core = client.CoreV1Api(api)

    def current_is_good(self) -> bool:
        """A certificate for this node is there, and not yet due for renewal."""
        try:
            cert = load_cert((self.tls_dir / "cert.pem").read_bytes())
        except (OSError, CertificateError):
            return False
        return not needs_renewal(cert)

    async def ensure(self) -> None:
        """Request one unless a good one is there; waits for the operator to sign."""
        if not self.current_is_good():
            await self.request()

    async def request(self) -> None:
        key = new_key()
        pem = new_request(key, self.node)
        name = f"serverlessos-{self.node.name}-{hashlib.sha256(pem).hexdigest()[:10]}"[:253]
        body = client.V1CertificateSigningRequest(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CertificateSigningRequestSpec(
                signer_name=SIGNER,
                request=base64.b64encode(pem).decode(),
                usages=["digital signature", "server auth", "client auth"],
            ),
        )
        await asyncio.to_thread(self.csrs.create_certificate_signing_request, body)
        log.info("asked for this node's certificate (%s); waiting for the operator", name)
        cert = await self._signed(name)
        ca = await asyncio.to_thread(
            self.core.read_namespaced_config_map, CA_CONFIG_MAP, self.namespace
        )
        ca_pem = ((ca.data or {}).get("ca.crt") or "").encode()
        self.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Key, then certificate: the port's reader takes them only as a matching pair.
        atomic_write(self.tls_dir / "ca.pem", ca_pem)
        atomic_write(self.tls_dir / "key.pem", key_pem(key))
        os.chmod(self.tls_dir / "key.pem", 0o600)
        atomic_write(self.tls_dir / "cert.pem", cert)
        log.info("this node's certificate is in %s", self.tls_dir)

    async def _signed(self, name: str) -> bytes:
        while True:
            try:
                csr = await asyncio.to_thread(self.csrs.read_certificate_signing_request, name)
            except ApiException as exc:
                if exc.status == 404:
                    raise CertificateRequestDenied(f"{name} is gone before it was signed") from None
                raise
            status = csr.status
            for condition in (status.conditions or []) if status else []:
                if condition.type in ("Denied", "Failed"):
                    raise CertificateRequestDenied(
                        f"the operator refused this node's certificate: {condition.message}"
                    )
            if status is not None and status.certificate:
                return base64.b64decode(status.certificate)
            await asyncio.sleep(POLL)

    async def renew(self, every: float = 300.0) -> None:
        """Renew at two thirds of the certificate's life, for as long as the agent runs
        (a failure is logged and tried again: the current one stays in use)."""
        while True:
            await asyncio.sleep(every)
            try:
                if not self.current_is_good():
                    started = time.monotonic()
                    await self.request()
                    log.info("renewed in %.1fs", time.monotonic() - started)
            except Exception as exc:
                log.warning("renewing this node's certificate failed: %s; trying again", exc)
