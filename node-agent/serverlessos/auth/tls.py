"""TLS contexts outside gRPC (the post-copy page tunnel, the operator's log API), from
PEM bytes held in memory."""

from __future__ import annotations

import os
import ssl


def load_identity(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and its key from memory: ssl loads them only from a file, so
    from an anonymous in-memory one, gone after this (the key never touches a disk)."""
    fd = os.memfd_create("tls-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert_pem + b"\n" + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def server_context(
    cert_pem: bytes,
    key_pem: bytes,
    client_ca_pem: bytes,
    client_certificate: ssl.VerifyMode = ssl.CERT_REQUIRED,
) -> ssl.SSLContext:
    """Serve as `cert_pem`; a client certificate shown must be of `client_ca_pem` (and
    one must be shown, unless `client_certificate` is CERT_OPTIONAL)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=client_ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = client_certificate
    load_identity(context, cert_pem, key_pem)
    return context
