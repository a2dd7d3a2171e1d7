"""Live migration between two agents with mutual TLS and real CRIU: a checkpoint leaves
a node only under the operator's ticket, goes only to the node the ticket names (by
its certificate), and is taken in only from the ticket's source. Anything else is
refused with PERMISSION_DENIED and the process runs on where it was."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA
from serverlessos.auth.tickets import Ticket

from .conftest import IS_ROOT, AgentProcess
from .test_agent_tls import code_of, write_identity

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not IS_ROOT, reason="needs root: CRIU, cgroups"),
]

# 32 MiB of random memory, and its digest now and then: post-copy must bring all of it.
MEMORY = """
import hashlib, os, time
data = bytearray(os.urandom(32 << 20))
print("digest", hashlib.sha256(data).hexdigest(), flush=True)
i = 0
while True:
    i += 1
    if i % 10 == 0:
        print("digest", hashlib.sha256(data).hexdigest(), flush=True)
    time.sleep(0.05)
"""
COUNTER = (
    "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.05)\n"
)


class Cluster:
    """Two TLS agents (node-a, node-b) of one CA, and the operator's identity.

    CRIU restores files at their original paths, so, as in the local cluster
    (hack/agents.sh), each agent sees its own state directory at one shared path
    (`self.state`) in a private mount namespace."""

    def __init__(self, factory: Callable[..., AgentProcess], criu: str, tmp: Path) -> None:
        self.ca = CA.create()
        self.state = tmp / "node-state"
        self.state.mkdir()
        operator = write_identity(tmp / "operator", self.ca, OPERATOR)
        self.agents: dict[str, AgentProcess] = {}
        for name in ("node-a", "node-b"):
            tls = write_identity(tmp / name, self.ca, identity.node(name))
            own = tmp / f"{name}-state"
            own.mkdir()
            wrap = [
                *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
                'mount --bind "$1" "$2" && shift 2 && exec "$@"',
                *("sh", str(own), str(self.state)),
            ]
            extra = [
                *("--criu", criu, "--node-name", name, "--tls-dir", str(tls)),
                *("--state-dir", str(self.state)),  # the agent's view; `own` is the host's
            ]
            agent = factory(extra=extra, wrap=wrap, state_dir=own, client_tls=operator)
            # The fixture's channel expects "test-node": dial each agent by its own name.
            agent.channel = agent.connect(node=name)
            agent.stub = pb_grpc.AgentStub(agent.channel)
            self.agents[name] = agent

    def ticket(self, process: pb.Process, mid: str, **override: str) -> bytes:
        fields = {
            "migration_id": mid,
            "namespace": process.spec.owner.namespace,
            "name": process.spec.name,
            "process_uid": process.spec.owner.uid,
            "source": "node-a",
            "target": "node-b",
        } | override
        return Ticket.issue(self.ca.key, **fields)

    def checkpoint(
        self,
        name: str,
        migration_id: str,
        *,
        ticket: bytes,
        target_node: str = "node-b",
        mode: pb.MigrationMode = pb.MIGRATION_MODE_STOP_AND_COPY,
    ) -> list[pb.CheckpointProgress]:
        request = pb.CheckpointProcessRequest(
            ref=pb.ProcessRef(namespace="default", name=name),
            migration_id=migration_id,
            target_endpoint=self.agents["node-b"].endpoint,
            mode=mode,
            target_node=target_node,
            ticket=ticket,
        )
        return list(self.agents["node-a"].stub.CheckpointProcess(request, timeout=90))


@pytest.fixture
def cluster(agent_factory: Callable[..., AgentProcess], criu: str, tmp_path: Path) -> Cluster:
    return Cluster(agent_factory, criu, tmp_path)


def still_running_on_a(cluster: Cluster, name: str, pid: int) -> None:
    after = cluster.agents["node-a"].get(name)
    assert after.state == pb.PROCESS_STATE_RUNNING and after.pid == pid
    assert not list((cluster.agents["node-b"].state_dir / "migrations").iterdir())


def test_a_ticketed_migration_moves_the_process(cluster: Cluster) -> None:
    a, b = cluster.agents["node-a"], cluster.agents["node-b"]
    process = a.run("c", ["python3", "-c", COUNTER], memory=64 * 2**20)
    time.sleep(0.5)
    progress = cluster.checkpoint("c", "m-1", ticket=cluster.ticket(process, "m-1"))
    assert progress[-1].stage == pb.CheckpointProgress.STAGE_TRANSFERRED, progress[-1]
    restored = b.stub.RestoreProcess(pb.RestoreProcessRequest(migration_id="m-1"), timeout=60)
    assert restored.process.state == pb.PROCESS_STATE_RUNNING
    ref = pb.ProcessRef(namespace="default", name="c")
    finish = pb.FinishMigrationRequest(migration_id="m-1", ref=ref, commit=True)
    a.stub.FinishMigration(finish, timeout=60)
    log = b.state_dir / Path(b.get("c").log_path).relative_to(cluster.state)
    count = int(log.read_text().split()[-1])
    time.sleep(0.5)
    assert int(log.read_text().split()[-1]) > count, "it counts on, on node-b"


def _digests(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("digest")]


def test_post_copy_memory_goes_through_the_tls_tunnel_to_the_target_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    """CRIU never listens on the network: the source agent serves the memory over
    mutual TLS to node-b alone (node-c, with a real certificate of this cluster, is
    turned away; plaintext fails the handshake), and all of it arrives intact."""
    a, b = cluster.agents["node-a"], cluster.agents["node-b"]
    process = a.run("m", ["python3", "-c", MEMORY], memory=256 * 2**20)
    log_a = a.state_dir / Path(process.log_path).relative_to(cluster.state)
    deadline = time.monotonic() + 20
    while not _digests(log_a):
        assert time.monotonic() < deadline, log_a.read_text()
        time.sleep(0.05)
    digest = _digests(log_a)[0]
    progress = cluster.checkpoint(
        "m", "m-pc", ticket=cluster.ticket(process, "m-pc"), mode=pb.MIGRATION_MODE_POST_COPY
    )
    host, _, port = progress[-1].page_server.rpartition(":")
    # Plaintext: no TLS, no bytes of memory.
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"\0" * 24)  # a page-server request
        assert raw.recv(1 << 16) == b"", "closed without an answer"
    # Another node of this cluster: the handshake works, the tunnel turns it away.
    intruder = write_identity(tmp_path / "node-c", cluster.ca, identity.node("node-c"))
    context = ssl.create_default_context(cafile=str(intruder / "ca.pem"))
    context.load_cert_chain(str(intruder / "cert.pem"), str(intruder / "key.pem"))
    with (
        socket.create_connection((host, int(port)), timeout=5) as tcp,
        context.wrap_socket(tcp, server_hostname="node-a.node.serverlessos.internal") as tls,
    ):
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            tls.sendall(b"\0" * 24)
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            assert tls.recv(1 << 16) == b"", "turned away without an answer"
    restored = b.stub.RestoreProcess(pb.RestoreProcessRequest(migration_id="m-pc"), timeout=60)
    assert restored.process.state == pb.PROCESS_STATE_RUNNING
    finish = pb.FinishMigrationRequest(
        migration_id="m-pc", ref=pb.ProcessRef(namespace="default", name="m"), commit=True
    )
    outcome = a.stub.FinishMigration(finish, timeout=120)
    assert "after its memory was served" in outcome.outcome, outcome
    log_b = b.state_dir / Path(b.get("m").log_path).relative_to(cluster.state)
    seen = len(_digests(log_b))
    deadline = time.monotonic() + 20
    while len(_digests(log_b)) <= seen:
        assert time.monotonic() < deadline, log_b.read_text()[-500:]
        time.sleep(0.1)
    assert set(_digests(log_b)) == {digest}, "every page arrived as it was"


@pytest.mark.parametrize(
    ("why", "override", "expected"),
    [
        ("no ticket", None, "without the operator's ticket"),
        ("another target", {"target": "node-c"}, "from node-a to node-c"),
        ("another process", {"name": "other"}, "the ticket is for default/other"),
        ("another owner", {"process_uid": "someone-else"}, "(uid someone-else)"),
        ("another migration", {"migration_id": "m-other"}, "in m-other"),
        ("another source", {"source": "node-b"}, "from node-b to node-b"),
    ],
)
def test_the_source_sends_only_under_a_matching_ticket(
    cluster: Cluster, why: str, override: dict[str, str] | None, expected: str
) -> None:
    a = cluster.agents["node-a"]
    process = a.run("c", ["python3", "-c", COUNTER])
    ticket = b"" if override is None else cluster.ticket(process, "m-1", **override)
    code, details = code_of(lambda: cluster.checkpoint("c", "m-1", ticket=ticket))
    assert code == grpc.StatusCode.PERMISSION_DENIED, why
    assert expected in details, details
    still_running_on_a(cluster, "c", process.pid)
    frozen = [e for e in a.events(0) if e.type == pb.EVENT_TYPE_FROZEN]
    assert not frozen, "refused before anything was frozen"


def test_a_forged_or_expired_ticket_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.agents["node-a"]
    process = a.run("c", ["python3", "-c", COUNTER])
    forger = CA.create("not this cluster")
    forged = Ticket.issue(
        forger.key,
        migration_id="m-1",
        namespace="default",
        name="c",
        process_uid=process.spec.owner.uid,
        source="node-a",
        target="node-b",
    )
    code, details = code_of(lambda: cluster.checkpoint("c", "m-1", ticket=forged))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not a ticket" in details
    expired = Ticket.issue(
        cluster.ca.key,
        migration_id="m-1",
        namespace="default",
        name="c",
        process_uid=process.spec.owner.uid,
        source="node-a",
        target="node-b",
        lifetime=-1,
    )
    code, details = code_of(lambda: cluster.checkpoint("c", "m-1", ticket=expired))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "expired" in details
    still_running_on_a(cluster, "c", process.pid)


def test_a_target_dialled_under_another_nodes_name_fails_the_handshake(cluster: Cluster) -> None:
    """The operator's ticket says node-c, and the source dials node-b's address as
    node-c: node-b's certificate does not prove that name, nothing is sent."""
    a = cluster.agents["node-a"]
    process = a.run("c", ["python3", "-c", COUNTER])
    ticket = cluster.ticket(process, "m-1", target="node-c")
    code, details = code_of(
        lambda: cluster.checkpoint("c", "m-1", ticket=ticket, target_node="node-c")
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "sending the checkpoint" in details
    after = a.get("c")
    assert after.state == pb.PROCESS_STATE_RUNNING and after.pid == process.pid
    assert after.message.startswith("resumed: checkpoint failed")


def _header(process: pb.Process, ticket: bytes, source: str) -> pb.CheckpointChunk:
    return pb.CheckpointChunk(
        header=pb.CheckpointHeader(
            migration_id="m-1", process=process, source_node=source, ticket=ticket
        )
    )


def test_the_target_takes_a_checkpoint_only_from_the_tickets_source(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A third agent (node-c, a real certificate of this cluster) replays a valid
    ticket of node-a's, claiming to be node-a: node-b refuses it."""
    b = cluster.agents["node-b"]
    process = pb.Process(
        spec=pb.ProcessSpec(
            name="c", owner=pb.Owner(namespace="default", uid="uid-c"), argv=["true"]
        )
    )
    ticket = cluster.ticket(process, "m-1")
    intruder = write_identity(tmp_path / "node-c", cluster.ca, identity.node("node-c"))
    with b.connect(tls=intruder, node="node-b") as channel:
        stub = pb_grpc.AgentStub(channel)
        code, details = code_of(
            lambda: stub.ReceiveCheckpoint(iter([_header(process, ticket, "node-a")]), timeout=10)
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "comes from spiffe://serverlessos.io/node/node-c" in details, details
    # node-a itself, with a ticket for another process, is refused too.
    peer = write_identity(tmp_path / "node-a-again", cluster.ca, identity.node("node-a"))
    other = cluster.ticket(process, "m-1", name="other")
    with b.connect(tls=peer, node="node-b") as channel:
        stub = pb_grpc.AgentStub(channel)
        code, details = code_of(
            lambda: stub.ReceiveCheckpoint(iter([_header(process, other, "node-a")]), timeout=10)
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "default/other" in details
    assert not list((b.state_dir / "migrations").iterdir()), "nothing was written"
