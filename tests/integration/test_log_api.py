"""The operator's log API server (operator logs/) in front of a real agent, over real
TLS: only a front proxy's certificate makes a caller, RBAC's answer decides, the log
streams as the process writes it, and every refusal is a Status with the right code.

The API server's part (front proxy, SubjectAccessReview) is played here by a CA of the
test's own and a review function; e2e/test_logs.py runs the same path through the real
kube-apiserver and RBAC."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth.pki import CA, cert_pem, key_pem, new_key
from serverlessos.auth.tls import load_identity, server_context
from serverlessos_operator.api.v1alpha1 import ServerlessProcessSpec
from serverlessos_operator.logs.access import LogAccess
from serverlessos_operator.logs.front_proxy import FrontProxy
from serverlessos_operator.logs.reader import ProcessLogs
from serverlessos_operator.logs.server import LogServer
from serverlessos_operator.logs.serving import ServingCertificate
from serverlessos_operator.processes.book import ProcessInfo

from .conftest import AgentProcess

SERVICE_NAME = "serverlessos-operator.serverlessos-system.svc"


def client_cert(ca: CA, common_name: str) -> tuple[bytes, bytes]:
    """A client certificate of `ca` (as the API server's proxy client certificate is)."""
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


class ServiceConnection(http.client.HTTPSConnection):
    """Dials an address but checks the certificate for the Service's name, as the API
    server does with aggregator routing."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=SERVICE_NAME)


class Books:
    """Where processes are, as the operator's ProcessBook says."""

    def __init__(self) -> None:
        self.infos: dict[tuple[str, str], ProcessInfo] = {}

    def add(self, name: str, node: str | None) -> None:
        spec = ServerlessProcessSpec.model_validate({"command": ["sh"]})
        info = ProcessInfo(namespace="default", name=name, uid=f"uid-{name}", spec=spec)
        info.node = node
        self.infos[("default", name)] = info

    def get(self, key: tuple[str, str]) -> ProcessInfo | None:
        return self.infos.get(key)


class Harness:
    def __init__(self, agent: AgentProcess) -> None:
        self.cluster_ca, self.proxy_ca = CA.create(), CA.create("front-proxy-ca")
        self.reviews: list[dict[str, Any]] = []
        self.allowed_users = {"alice"}
        self.books = Books()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.agent = agent
        self.port = 0
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def review(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(spec)
        return {"allowed": spec["user"] in self.allowed_users, "reason": "no RoleBinding"}

    async def _start(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.agent.endpoint)
        stub = pb_grpc.AgentStub(self.channel)
        front_proxy = FrontProxy.from_config_map(
            {
                "requestheader-client-ca-file": self.proxy_ca.cert_pem,
                "requestheader-allowed-names": b'["front-proxy-client"]',
                "requestheader-username-headers": b'["X-Remote-User"]',
                "requestheader-group-headers": b'["X-Remote-Group"]',
                "requestheader-extra-headers-prefix": b'["X-Remote-Extra-"]',
            }
        )
        assert front_proxy is not None
        self.serving = ServingCertificate(
            self.cluster_ca, "serverlessos-operator", "serverlessos-system"
        )
        context = server_context(
            self.serving.cert_pem,
            self.serving.key_pem,
            self.proxy_ca.cert_pem,
            client_certificate=ssl.CERT_OPTIONAL,
        )
        self.server = LogServer(
            front_proxy, LogAccess(self.review), ProcessLogs(self.books, lambda node: stub)
        )
        # Port 0 cannot be read back from aiohttp's site portably: find a free one.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        await self.server.start("127.0.0.1", self.port, context)

    def close(self) -> None:
        self.run(self.server.close())
        self.run(self.channel.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def connect(self, cert: tuple[bytes, bytes] | None, timeout: float = 30) -> ServiceConnection:
        context = ssl.create_default_context(cadata=self.cluster_ca.cert_pem.decode())
        if cert is not None:
            load_identity(context, *cert)
        return ServiceConnection(self.port, context, timeout)

    def get(
        self,
        path: str,
        user: str | None = "alice",
        cert: tuple[bytes, bytes] | None = None,
        groups: tuple[str, ...] = (),
        extra: dict[str, str] | None = None,
        common_name: str = "front-proxy-client",
    ) -> tuple[int, bytes]:
        connection = self.connect(cert or client_cert(self.proxy_ca, common_name))
        headers = {"X-Remote-User": user} if user else {}
        for group in groups:
            headers.setdefault("X-Remote-Group", group)
        headers.update(extra or {})
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body


def log_path(name: str, query: str = "") -> str:
    base = f"/apis/logs.serverlessos.io/v1alpha1/namespaces/default/serverlessprocesses/{name}/log"
    return base + (f"?{query}" if query else "")


@pytest.fixture
def harness(agent: AgentProcess) -> Iterator[Harness]:
    h = Harness(agent)
    yield h
    h.close()


def started(agent: AgentProcess, harness: Harness, name: str, script: str) -> None:
    agent.run(name, ["sh", "-c", script])
    harness.books.add(name, "test-node")


def message(body: bytes) -> tuple[str, int]:
    status = json.loads(body)
    assert status["kind"] == "Status" and status["status"] == "Failure"
    return status["message"], status["code"]


def test_an_authorized_caller_reads_the_log_and_the_review_names_the_subresource(
    agent: AgentProcess, harness: Harness
) -> None:
    started(agent, harness, "hello", "for i in 1 2 3 4 5; do echo line $i; done")
    agent.wait_for("hello", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    status, body = harness.get(
        log_path("hello"),
        groups=("devs",),
        extra={"X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name": "p1"},
    )
    assert status == 200, body
    assert body == b"".join(f"line {i}\n".encode() for i in range(1, 6))
    review = harness.reviews[-1]
    assert review["user"] == "alice" and review["groups"] == ["devs"]
    assert review["extra"] == {"authentication.kubernetes.io/pod-name": ["p1"]}
    assert review["resourceAttributes"] == {
        "namespace": "default",
        "verb": "get",
        "group": "logs.serverlessos.io",
        "resource": "serverlessprocesses",
        "subresource": "log",
        "name": "hello",
    }
    status, body = harness.get(log_path("hello", "tailLines=2"))
    assert (status, body) == (200, b"line 4\nline 5\n")


def test_rbac_says_no_and_the_log_is_not_read(agent: AgentProcess, harness: Harness) -> None:
    started(agent, harness, "secret", "echo the secret; sleep 30")
    status, body = harness.get(log_path("secret"), user="bob")
    text, code = message(body)
    assert (status, code) == (403, 403)
    assert 'User "bob" cannot get resource "serverlessprocesses/log"' in text
    assert "no RoleBinding" in text and b"the secret" not in body


def test_only_the_front_proxy_makes_a_caller(agent: AgentProcess, harness: Harness) -> None:
    started(agent, harness, "p", "echo hi; sleep 30")
    # No client certificate: the headers are anyone's, so they count for nothing.
    connection = harness.connect(None)
    connection.request("GET", log_path("p"), headers={"X-Remote-User": "alice"})
    response = connection.getresponse()
    text, _ = message(response.read())
    assert response.status == 401 and "only the API server" in text
    # A certificate of the front-proxy CA with a name the API server does not use.
    status, body = harness.get(log_path("p"), common_name="mallory")
    assert status == 401 and "'mallory' is not a front proxy" in message(body)[0]
    # The front proxy named nobody.
    status, body = harness.get(log_path("p"), user=None)
    assert status == 401 and "named no user" in message(body)[0]
    # A certificate of another CA does not get through the handshake at all.
    foreign = CA.create("front-proxy-ca")
    connection = harness.connect(client_cert(foreign, "front-proxy-client"))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        connection.request("GET", log_path("p"), headers={"X-Remote-User": "alice"})
        connection.getresponse().read()
    # Discovery is public, as in the API server.
    connection = harness.connect(None)
    connection.request("GET", "/apis/logs.serverlessos.io/v1alpha1")
    response = connection.getresponse()
    resources = json.loads(response.read())
    assert response.status == 200
    assert [r["name"] for r in resources["resources"]] == ["serverlessprocesses/log"]
    assert not [r for r in harness.reviews if r["user"] in ("mallory", "")]


def test_refusals_are_statuses_with_their_codes(agent: AgentProcess, harness: Harness) -> None:
    assert message(harness.get(log_path("nobody"))[1]) == (
        'serverlessprocesses "nobody" not found in default',
        404,
    )
    harness.books.add("pending", None)
    assert message(harness.get(log_path("pending"))[1])[1] == 400
    # Known to the operator, not to its agent (the agent's NOT_FOUND).
    harness.books.add("ghost", "test-node")
    text, code = message(harness.get(log_path("ghost"))[1])
    assert code == 404 and text.startswith("node test-node:")
    for query in ("tailLines=-1", "tailLines=abc", "follow=maybe"):
        status, body = harness.get(log_path("pending", query))
        assert status == 400 and message(body)[1] == 400, query


def test_follow_streams_output_as_it_is_written(agent: AgentProcess, harness: Harness) -> None:
    started(
        agent,
        harness,
        "ticker",
        "i=0; while [ $i -lt 4 ]; do i=$((i+1)); echo tick $i; sleep 1; done",
    )
    connection = harness.connect(client_cert(harness.proxy_ca, "front-proxy-client"))
    connection.request("GET", log_path("ticker", "follow=true"), headers={"X-Remote-User": "alice"})
    response = connection.getresponse()
    assert response.status == 200
    first = response.readline()
    seen_at = time.monotonic()
    assert first == b"tick 1\n"
    rest = response.read()  # ends when the process has ended for good
    assert rest == b"tick 2\ntick 3\ntick 4\n"
    # It streamed: the first line came seconds before the stream ended.
    assert time.monotonic() - seen_at > 1.5


def test_the_serving_certificate_names_the_service(harness: Harness) -> None:
    names = harness.serving.cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert names == [SERVICE_NAME, SERVICE_NAME + ".cluster.local"]
    usages = harness.serving.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # A client expecting another name is turned away by its own TLS check.
    context = ssl.create_default_context(cadata=harness.cluster_ca.cert_pem.decode())
    raw = socket.create_connection(("127.0.0.1", harness.port))
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="evil.serverlessos-system.svc")
    raw.close()
