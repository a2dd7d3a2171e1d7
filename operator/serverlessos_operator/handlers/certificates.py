"""CertificateSigningRequests for the agents' signer: an agent asks for its node's
certificate (the operator signs it only when TLS is on, see auth/signer.py)."""

from __future__ import annotations

from typing import Any

import kopf

from ..auth.signer import SIGNER
from .lifecycle import operator_of


@kopf.on.event(
    "certificates.k8s.io",
    "v1",
    "certificatesigningrequests",
    field="spec.signerName",
    value=SIGNER,
)
async def certificate_request_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    if type != "DELETED":
        await operator_of(memo).certificate_requested(body)
