"""Migration tickets: the operator's word, signed with the cluster CA's key, that one
migration may carry one process from one node to another until a deadline.

The source agent sends a checkpoint only to the ticket's target (dialled by that
node's TLS name), and the target accepts one only from the ticket's source (its
client certificate's identity) and only for the process the ticket names. Without a
ticket, or with one that does not match, nothing moves.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import Certificate

LIFETIME = 900.0  # seconds: the longest checkpoint the operator waits for
# What the CA key signs for a ticket starts with this, so no ticket's signature can
# pass for a certificate's or anything else the key signs (and none of theirs for it).
DOMAIN = b"serverlessos.io/migration-ticket/v1\0"


class TicketError(ValueError):
    """A ticket that is malformed, forged, expired, or for something else."""


@dataclass(frozen=True)
class Ticket:
    migration_id: str
    namespace: str
    name: str
    process_uid: str
    source: str  # node names
    target: str
    expires_at: float  # Unix seconds

    def __post_init__(self) -> None:
        texts = (self.migration_id, self.namespace, self.name, self.process_uid)
        if not all(isinstance(t, str) for t in (*texts, self.source, self.target)):
            raise TicketError("a ticket's fields are text")
        if isinstance(self.expires_at, bool) or not isinstance(self.expires_at, int | float):
            raise TicketError("a ticket's expiry is a number")

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def sign(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        signature = key.sign(DOMAIN + self.payload(), ec.ECDSA(hashes.SHA256()))
        return _b64(self.payload()) + b"." + _b64(signature)

    @classmethod
    def issue(
        cls,
        key: ec.EllipticCurvePrivateKey,
        *,
        migration_id: str,
        namespace: str,
        name: str,
        process_uid: str,
        source: str,
        target: str,
        lifetime: float = LIFETIME,
    ) -> bytes:
        return cls(
            migration_id, namespace, name, process_uid, source, target, time.time() + lifetime
        ).sign(key)

    @classmethod
    def verify(cls, token: bytes, ca: Certificate, now: float | None = None) -> Ticket:
        """The ticket, if the CA signed it and it has not expired."""
        if len(token) > 4096:
            raise TicketError("the ticket is too long")
        payload_part, _, signature_part = token.partition(b".")
        try:
            payload, signature = _unb64(payload_part), _unb64(signature_part)
            public_key = ca.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise TicketError("the CA's key is not an ECDSA key")
            public_key.verify(signature, DOMAIN + payload, ec.ECDSA(hashes.SHA256()))
            fields = json.loads(payload)
            ticket = cls(**fields)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise TicketError(f"not a ticket of this cluster's operator ({exc!r})") from None
        if (now or time.time()) > ticket.expires_at:
            raise TicketError(f"the ticket of migration {ticket.migration_id} has expired")
        return ticket


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
