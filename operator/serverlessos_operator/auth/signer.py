"""Signing the agents' certificates: Kubernetes CertificateSigningRequests with signer
`serverlessos.io/agent`, approved and signed only for the node their requester is.

An agent authenticates to the API server with a node-bound ServiceAccount token (a
pod's, or one made with `kubectl create token --bound-object-kind Node`), which puts
`authentication.kubernetes.io/node-name` in the request's `spec.extra`. The request is
approved when its requester is the agents' ServiceAccount, it names exactly one node,
and the certificate asked for is exactly that node's identity; anything else is
denied with the reason. The key never leaves the agent's node.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serverlessos.auth import identity
from serverlessos.auth.identity import IdentityError
from serverlessos.auth.pki import CA, CertificateError, cert_pem

SIGNER = "serverlessos.io/agent"
NODE_CLAIM = "authentication.kubernetes.io/node-name"


@dataclass(frozen=True)
class Request:
    """What the signer reads of a CertificateSigningRequest."""

    name: str
    signer: str
    username: str
    nodes: tuple[str, ...]  # the requester's node claim (a node-bound token has one)
    request: bytes  # the PKCS#10 request, PEM
    decided: bool  # approved, denied or signed already

    @classmethod
    def from_object(cls, csr: Mapping[str, Any]) -> Request:
        spec, status = csr.get("spec") or {}, csr.get("status") or {}
        conditions = {c.get("type") for c in status.get("conditions") or []}
        try:
            request = base64.b64decode(spec.get("request") or "", validate=True)
        except ValueError:
            request = b""
        return cls(
            name=str((csr.get("metadata") or {}).get("name") or ""),
            signer=str(spec.get("signerName") or ""),
            username=str(spec.get("username") or ""),
            nodes=tuple(str(n) for n in (spec.get("extra") or {}).get(NODE_CLAIM) or []),
            request=request,
            decided=bool(status.get("certificate"))
            or bool(conditions & {"Approved", "Denied", "Failed"}),
        )


@dataclass(frozen=True)
class Decision:
    approve: bool
    reason: str
    message: str
    certificate: bytes = b""  # PEM, when approved


def decide(csr: Request, agents: str, ca: CA) -> Decision | None:
    """What to do with one request; None when it is not ours or already decided.
    `agents`: the username the agents' ServiceAccount authenticates as."""
    if csr.signer != SIGNER or csr.decided:
        return None
    if csr.username != agents:
        return _deny(f"requested by {csr.username!r}; only {agents} may ask")
    if len(csr.nodes) != 1:
        return _deny(
            "the requester's token names no node (it must be node-bound: a pod's, or "
            "`kubectl create token --bound-object-kind Node`)"
        )
    try:
        node = identity.node(csr.nodes[0])
        cert = ca.sign_request(csr.request, node)
    except (IdentityError, CertificateError, ValueError) as exc:
        return _deny(f"for node {csr.nodes[0]}: {exc}")
    return Decision(True, "NodeIdentity", f"a certificate for {node}", cert_pem(cert))


def _deny(message: str) -> Decision:
    return Decision(False, "NotThisNode", message)
