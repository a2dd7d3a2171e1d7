"""The cluster CA, kept in a Secret of the operator's namespace (created by the first
operator that finds none), and its certificate published in a ConfigMap of the same
name, which the agents read to trust the operator and each other."""

from __future__ import annotations

import logging
from typing import Protocol

from serverlessos.auth.pki import CA, CertificateError

log = logging.getLogger(__name__)

NAME = "serverlessos-ca"


class CaObjects(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    async def create_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> bool: ...

    async def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None: ...


async def ensure_ca(kube: CaObjects, namespace: str) -> CA:
    """The cluster's CA: the Secret's, or a new one stored there (a concurrent creator
    wins: its CA is read back)."""
    data = await kube.read_secret(namespace, NAME)
    if data is None:
        ca = CA.create()
        created = await kube.create_secret(
            namespace, NAME, {"tls.key": ca.key_pem, "tls.crt": ca.cert_pem}
        )
        if created:
            log.info("created the cluster CA in Secret %s/%s", namespace, NAME)
        else:
            data = await kube.read_secret(namespace, NAME)
            if data is None:
                raise RuntimeError(f"Secret {namespace}/{NAME} could be neither created nor read")
    if data is not None:
        try:
            ca = CA.load(data["tls.key"], data["tls.crt"])
        except (KeyError, CertificateError, ValueError) as exc:
            raise RuntimeError(
                f"Secret {namespace}/{NAME} does not hold a usable CA (tls.key, tls.crt): {exc}"
            ) from None
    await kube.apply_config_map(namespace, NAME, {"ca.crt": ca.cert_pem.decode()})
    return ca
