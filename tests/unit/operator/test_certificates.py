"""Signing the agents' certificates, and the cluster CA's Secret: plain code, with the
Kubernetes API as an in-memory stand-in (fakes.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA, load_cert, new_key, new_request
from serverlessos_operator.auth.ca_store import NAME, ensure_ca
from serverlessos_operator.auth.credentials import OperatorCredentials
from serverlessos_operator.auth.signer import SIGNER, Request, decide

from .fakes import run

AGENTS = "system:serviceaccount:serverlessos-system:serverlessos-agent"


def csr_object(
    *, node_claim: list[str] | None, asks_for: str = "n1", username: str = AGENTS, **status: Any
) -> dict[str, Any]:
    request = new_request(new_key(), identity.node(asks_for))
    extra = {"authentication.kubernetes.io/node-name": node_claim} if node_claim else {}
    return {
        "metadata": {"name": "csr-1"},
        "spec": {
            "signerName": SIGNER,
            "username": username,
            "extra": extra,
            "request": base64.b64encode(request).decode(),
        },
        "status": status,
    }


def test_an_agent_gets_the_certificate_of_the_node_its_token_is_bound_to() -> None:
    ca = CA.create()
    decision = decide(Request.from_object(csr_object(node_claim=["n1"])), AGENTS, ca)
    assert decision is not None and decision.approve
    assert ca.verify(load_cert(decision.certificate)) == identity.node("n1")


def garbled(obj: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["request"] = base64.b64encode(b"not a request").decode()
    return obj


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (csr_object(node_claim=["n2"]), "may ask only for"),  # another node's identity
        (csr_object(node_claim=None), "names no node"),  # a token not bound to a node
        (csr_object(node_claim=["n1", "n2"]), "names no node"),
        (csr_object(node_claim=["n1"], username="system:serviceaccount:x:y"), "only system:"),
        (garbled(csr_object(node_claim=["n1"])), "not a PEM"),
    ],
)
def test_anything_else_is_denied_with_the_reason(obj: dict[str, Any], words: str) -> None:
    decision = decide(Request.from_object(obj), AGENTS, CA.create())
    assert decision is not None and not decision.approve and words in decision.message


def test_requests_of_other_signers_and_decided_ones_are_left_alone() -> None:
    other = csr_object(node_claim=["n1"])
    other["spec"]["signerName"] = "kubernetes.io/kube-apiserver-client"
    assert decide(Request.from_object(other), AGENTS, CA.create()) is None
    done = csr_object(node_claim=["n1"], conditions=[{"type": "Approved", "status": "True"}])
    assert decide(Request.from_object(done), AGENTS, CA.create()) is None


class CaObjects:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get((namespace, name))

    async def create_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> bool:
        if (namespace, name) in self.secrets:
            return False
        self.secrets[(namespace, name)] = data
        return True

    async def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.config_maps[(namespace, name)] = data


def test_the_ca_is_made_once_kept_in_a_secret_and_published() -> None:
    kube = CaObjects()
    first = run(lambda: ensure_ca(kube, "sos"))
    again = run(lambda: ensure_ca(kube, "sos"))  # a restarted operator: the same CA
    assert first.cert_pem == again.cert_pem
    assert kube.config_maps[("sos", NAME)] == {"ca.crt": first.cert_pem.decode()}
    assert "tls.key" in kube.secrets[("sos", NAME)]
    kube.secrets[("sos", NAME)] = {"tls.crt": b"junk"}
    with pytest.raises(RuntimeError, match="does not hold a usable CA"):
        run(lambda: ensure_ca(kube, "sos"))


def test_the_operators_own_certificate_names_it_and_is_renewed_when_due() -> None:
    ca = CA.create()
    credentials = OperatorCredentials(ca)
    assert ca.verify(credentials.cert) == OPERATOR
    assert not credentials.renew_if_due()
    assert credentials.channel_credentials() is not None
