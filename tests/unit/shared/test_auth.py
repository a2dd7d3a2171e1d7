"""Identities, the cluster CA, certificate requests and migration tickets."""

from __future__ import annotations

import base64
import datetime
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR, Identity, IdentityError, peer_identity
from serverlessos.auth.pki import (
    CA,
    CertificateError,
    check_request,
    identity_of,
    needs_renewal,
    new_key,
    new_request,
)
from serverlessos.auth.tickets import Ticket, TicketError


def test_identities_are_spiffe_ids_with_a_tls_name() -> None:
    node = identity.node("kwok-node-0")
    assert node.uri == "spiffe://serverlessos.io/node/kwok-node-0"
    assert node.tls_name == "kwok-node-0.node.serverlessos.internal"
    assert Identity.parse(node.uri) == node and Identity.parse(OPERATOR.uri) == OPERATOR
    assert OPERATOR.is_operator and not node.is_operator
    for bad in (
        "spiffe://other.io/operator",
        "spiffe://serverlessos.io/node/",
        "operator",
        "spiffe://serverlessos.io/node/A",
        "spiffe://serverlessos.io/user/x",
    ):
        with pytest.raises(IdentityError):
            Identity.parse(bad)


def test_the_callers_identity_comes_from_its_verified_certificate() -> None:
    assert peer_identity({"peer_spiffe_id": [OPERATOR.uri.encode()]}) == OPERATOR
    assert peer_identity({}) is None  # plaintext
    assert peer_identity({"peer_spiffe_id": [b"spiffe://evil.io/operator"]}) is None
    two = [OPERATOR.uri.encode(), identity.node("a").uri.encode()]
    assert peer_identity({"peer_spiffe_id": two}) is None


def test_the_ca_signs_requests_for_exactly_the_identity_expected() -> None:
    ca = CA.create()
    key = new_key()
    node = identity.node("n1")
    cert = ca.sign_request(new_request(key, node), node)
    assert ca.verify(cert) == node == identity_of(cert)
    assert cert.public_key() == key.public_key()
    assert not needs_renewal(cert)
    later = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) * 0.7
    assert needs_renewal(cert, later)
    with pytest.raises(CertificateError, match="may ask only for"):
        ca.sign_request(new_request(key, identity.node("n2")), node)
    with pytest.raises(CertificateError, match="may ask only for"):
        ca.sign_request(new_request(key, OPERATOR), node)
    other = CA.create()
    with pytest.raises(CertificateError, match="not issued by this CA"):
        other.verify(cert)


def test_requests_with_more_names_or_other_keys_are_refused() -> None:
    node = identity.node("n1")
    key = new_key()
    extra = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.tls_name)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(node.uri),
                    x509.DNSName(node.tls_name),
                    x509.DNSName("kubernetes.default.svc"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CertificateError, match="may ask only for"):
        check_request(extra, node)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CertificateError, match="P-256"):
        check_request(rsa_csr, node)
    with pytest.raises(CertificateError, match="not a PEM"):
        check_request(b"garbage", node)


def test_a_ca_survives_its_pem_round_trip() -> None:
    ca = CA.create()
    again = CA.load(ca.key_pem, ca.cert_pem)
    cert = ca.issue(new_key().public_key(), OPERATOR)
    assert again.verify(cert) == OPERATOR
    assert ca.cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=3000
    )


def _ticket(ca: CA, **changes: object) -> bytes:
    fields = {
        "migration_id": "m1",
        "namespace": "ns",
        "name": "p",
        "process_uid": "u",
        "source": "a",
        "target": "b",
        **changes,
    }
    return Ticket.issue(ca.key, **fields)  # type: ignore[arg-type]


def test_tickets_are_the_operators_word_until_they_expire() -> None:
    ca = CA.create()
    ticket = Ticket.verify(_ticket(ca), ca.cert)
    assert (ticket.migration_id, ticket.source, ticket.target) == ("m1", "a", "b")
    with pytest.raises(TicketError, match="expired"):
        Ticket.verify(_ticket(ca), ca.cert, now=time.time() + 10_000)
    with pytest.raises(TicketError, match="not a ticket"):
        Ticket.verify(_ticket(CA.create()), ca.cert)  # another cluster's operator
    payload, _, signature = _ticket(ca).partition(b".")
    forged = _ticket(ca, target="evil").partition(b".")[0] + b"." + signature
    with pytest.raises(TicketError, match="not a ticket"):
        Ticket.verify(forged, ca.cert)
    for junk in (b"", b".", b"x" * 5000, payload):
        with pytest.raises(TicketError):
            Ticket.verify(junk, ca.cert)


def test_a_signature_the_ca_key_made_for_anything_else_is_no_ticket() -> None:
    """Tickets are signed under their own domain prefix: the CA key's signature over
    the bare payload (as it could be over some other message) does not verify."""
    ca = CA.create()
    payload = base64.urlsafe_b64decode(_ticket(ca).partition(b".")[0] + b"==")
    bare = ca.key.sign(payload, ec.ECDSA(hashes.SHA256()))
    token = (
        base64.urlsafe_b64encode(payload).rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(bare).rstrip(b"=")
    )
    with pytest.raises(TicketError, match="not a ticket"):
        Ticket.verify(token, ca.cert)
