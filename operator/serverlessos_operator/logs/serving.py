"""The log API's serving certificate: issued by the cluster CA for the operator's
Service (`<service>.<namespace>.svc`), which the API server checks against the
APIService's caBundle; day-long, renewed at two thirds of its life."""

from __future__ import annotations

from serverlessos.auth.pki import CA, cert_pem, key_pem, needs_renewal, new_key


def service_names(service: str, namespace: str) -> list[str]:
    base = f"{service}.{namespace}.svc"
    return [base, f"{base}.cluster.local"]


class ServingCertificate:
    def __init__(self, ca: CA, service: str, namespace: str) -> None:
        self.ca = ca
        self.names = service_names(service, namespace)
        self._issue()

    def _issue(self) -> None:
        key = new_key()
        self.cert = self.ca.issue_serving(key.public_key(), self.names)
        self.cert_pem, self.key_pem = cert_pem(self.cert), key_pem(key)

    def renew_if_due(self) -> bool:
        if not needs_renewal(self.cert):
            return False
        self._issue()
        return True
