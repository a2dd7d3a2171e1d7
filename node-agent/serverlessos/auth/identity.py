"""Identities on the platform's channels, as SPIFFE IDs in certificates' URI SANs.

  spiffe://serverlessos.io/operator       the operator (the only one that runs things)
  spiffe://serverlessos.io/node/<name>    the agent of node <name>

A node's certificate also names `<name>.node.serverlessos.internal` (a DNS SAN): the
operator and peers dial an agent with that TLS name, so a connection reaches node
<name>'s agent or fails its handshake, whatever address an endpoint points at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TRUST_DOMAIN = "serverlessos.io"
NODE_DOMAIN = "node.serverlessos.internal"
OPERATOR_NAME = "operator.serverlessos.internal"
_NODE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a Node name (DNS subdomain)


class IdentityError(ValueError):
    """Not an identity of this platform."""


@dataclass(frozen=True)
class Identity:
    kind: str  # "operator" or "node"
    name: str = ""  # the node's name

    def __post_init__(self) -> None:
        if self.kind == "operator" and not self.name:
            return
        if self.kind == "node" and _NODE.match(self.name):
            return
        raise IdentityError(f"not an identity: {self.kind} {self.name!r}")

    @property
    def uri(self) -> str:
        if self.kind == "operator":
            return f"spiffe://{TRUST_DOMAIN}/operator"
        return f"spiffe://{TRUST_DOMAIN}/node/{self.name}"

    @property
    def tls_name(self) -> str:
        """The DNS SAN its certificate carries and callers dial it by."""
        if self.kind == "operator":
            return OPERATOR_NAME
        return f"{self.name}.{NODE_DOMAIN}"

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> Identity:
        prefix = f"spiffe://{TRUST_DOMAIN}/"
        if not uri.startswith(prefix):
            raise IdentityError(f"{uri!r} is not a {TRUST_DOMAIN} identity")
        path = uri[len(prefix) :]
        if path == "operator":
            return OPERATOR
        kind, _, name = path.partition("/")
        if kind != "node":
            raise IdentityError(f"{uri!r} is not a {TRUST_DOMAIN} identity")
        return cls("node", name)


OPERATOR = Identity("operator")


def node(name: str) -> Identity:
    return Identity("node", name)


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> Identity | None:
    """The caller's identity from a gRPC auth context (its verified certificate's SPIFFE
    ID); None for a caller without one (plaintext, or a certificate naming none)."""
    ids = list(auth_context.get("peer_spiffe_id") or [])
    if len(ids) != 1:
        return None
    try:
        return Identity.parse(ids[0].decode())
    except (IdentityError, UnicodeDecodeError):
        return None
