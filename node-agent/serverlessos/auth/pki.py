"""The cluster CA and the certificates it issues, with `cryptography`.

Keys are ECDSA P-256. The CA signs short-lived leaf certificates (a day by default,
renewed at two thirds of their life) that carry one identity (identity.py) as their
URI SAN and its TLS name as their DNS SAN, for server and client authentication both
(an agent is a server to the operator and to peers, and a client of peers).

A leaf is issued from a certificate signing request (the agent's key never leaves its
node) or, for the operator, from its own key.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import Identity, IdentityError

CA_LIFETIME = datetime.timedelta(days=3650)
LEAF_LIFETIME = datetime.timedelta(days=1)
SKEW = datetime.timedelta(minutes=5)  # not-before in the past: clocks differ a little


class CertificateError(ValueError):
    """A request, certificate or key that cannot be used, and why."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the key is not an ECDSA key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "serverlessos cluster CA") -> CA:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, key: bytes, cert: bytes) -> CA:
        return cls(load_key(key), load_cert(cert))

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: Identity,
        lifetime: datetime.timedelta = LEAF_LIFETIME,
    ) -> x509.Certificate:
        """A leaf for one identity, server and client both."""
        return self._leaf(
            public_key,
            identity.tls_name,
            [x509.UniformResourceIdentifier(identity.uri), x509.DNSName(identity.tls_name)],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            lifetime,
        )

    def issue_serving(
        self,
        public_key: ec.EllipticCurvePublicKey,
        dns_names: list[str],
        lifetime: datetime.timedelta = LEAF_LIFETIME,
    ) -> x509.Certificate:
        """A server-only leaf for DNS names (a Service's), carrying no identity: the
        operator's log API, which the API server dials (logs/serving.py)."""
        return self._leaf(
            public_key,
            dns_names[0],
            [x509.DNSName(name) for name in dns_names],
            [ExtendedKeyUsageOID.SERVER_AUTH],
            lifetime,
        )

    def _leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        names: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        lifetime: datetime.timedelta,
    ) -> x509.Certificate:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def sign_request(
        self, csr_pem: bytes, expected: Identity, lifetime: datetime.timedelta = LEAF_LIFETIME
    ) -> x509.Certificate:
        """A certificate for a request that asks for exactly `expected` and nothing else."""
        public_key = check_request(csr_pem, expected)
        return self.issue(public_key, expected, lifetime)

    def verify(self, cert: x509.Certificate) -> Identity:
        """The identity a certificate of this CA carries; raises if it is not one."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateError(f"not issued by this CA: {exc}") from None
        return identity_of(cert)


def new_request(key: ec.EllipticCurvePrivateKey, identity: Identity) -> bytes:
    """A PEM certificate signing request for one identity."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.tls_name)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity.uri), x509.DNSName(identity.tls_name)]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def check_request(csr_pem: bytes, expected: Identity) -> ec.EllipticCurvePublicKey:
    """The request's public key, if it is well formed, signed by its own key, and asks
    for `expected` (URI and DNS SAN, nothing more); CertificateError otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise CertificateError("the request is not signed by its own key")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
        "secp256r1"
    ):
        raise CertificateError("the request's key is not an ECDSA P-256 key")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the request names no identity (no SAN)") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    dns = sans.get_values_for_type(x509.DNSName)
    others = [n for n in sans if not isinstance(n, x509.UniformResourceIdentifier | x509.DNSName)]
    if uris != [expected.uri] or dns != [expected.tls_name] or others:
        raise CertificateError(
            f"the request asks for {uris + dns} and may ask only for "
            f"{[expected.uri, expected.tls_name]}"
        )
    return public_key


def identity_of(cert: x509.Certificate) -> Identity:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the certificate names no identity") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise CertificateError(f"the certificate names {len(uris)} identities, not one")
    try:
        return Identity.parse(uris[0])
    except IdentityError as exc:
        raise CertificateError(str(exc)) from None


def needs_renewal(cert: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    """Past two thirds of its life (or over): time for a new one."""
    now = now or _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3
