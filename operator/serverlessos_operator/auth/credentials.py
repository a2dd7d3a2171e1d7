"""The operator's own identity to the agents: a key and a day-long certificate from the
cluster CA, renewed at two thirds of its life (new channels then use the new one)."""

from __future__ import annotations

import grpc
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA, cert_pem, key_pem, needs_renewal, new_key


class OperatorCredentials:
    def __init__(self, ca: CA) -> None:
        self.ca = ca
        self._issue()

    def _issue(self) -> None:
        key = new_key()
        self.cert = self.ca.issue(key.public_key(), OPERATOR)
        self._key_pem, self._cert_pem = key_pem(key), cert_pem(self.cert)

    def renew_if_due(self) -> bool:
        """A new certificate when this one is two thirds through its life; True if so."""
        if not needs_renewal(self.cert):
            return False
        self._issue()
        return True

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.cert_pem, self._key_pem, self._cert_pem)
