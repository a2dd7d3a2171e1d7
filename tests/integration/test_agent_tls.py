"""The agent's port with mutual TLS (--tls-dir), against a real agent: who gets in, who
may call what, and how it takes renewed certificates."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR, Identity
from serverlessos.auth.pki import CA, cert_pem, key_pem, new_key
from serverlessos_operator.auth.credentials import OperatorCredentials
from serverlessos_operator.infra.agents import AgentPool

from .conftest import ROOT, AgentProcess

NODE = "test-node"


def write_identity(directory: Path, ca: CA, who: Identity, trust: CA | None = None) -> Path:
    """ca.pem (the CA this identity trusts), cert.pem and key.pem of `who`, issued by `ca`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key()
    (directory / "ca.pem").write_bytes((trust or ca).cert_pem)
    (directory / "cert.pem").write_bytes(cert_pem(ca.issue(key.public_key(), who)))
    (directory / "key.pem").write_bytes(key_pem(key))
    os.chmod(directory / "key.pem", 0o600)
    return directory


CA_OF: dict[Path, CA] = {}  # each test's agent directory -> the CA that issued it


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, foreign = CA.create(), CA.create("another cluster")
    CA_OF[tmp_path / "agent"] = ca
    return {
        "agent": write_identity(tmp_path / "agent", ca, identity.node(NODE)),
        "operator": write_identity(tmp_path / "operator", ca, OPERATOR),
        "peer": write_identity(tmp_path / "peer", ca, identity.node("other-node")),
        "foreign": write_identity(tmp_path / "foreign", foreign, OPERATOR, trust=ca),
    }


@pytest.fixture
def tls_agent(agent_factory: Callable[..., AgentProcess], pki: dict[str, Path]) -> AgentProcess:
    return agent_factory(extra=["--tls-dir", str(pki["agent"])], client_tls=pki["operator"])


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def test_the_operator_gets_in_and_may_run_processes(tls_agent: AgentProcess) -> None:
    started = tls_agent.run("web", ["sleep", "300"])
    assert started.state == pb.PROCESS_STATE_RUNNING
    assert [
        p.spec.name for p in tls_agent.stub.ListProcesses(pb.ListProcessesRequest()).processes
    ] == ["web"]


def test_plaintext_and_another_clusters_certificate_are_refused(
    tls_agent: AgentProcess, pki: dict[str, Path]
) -> None:
    with tls_agent.connect(tls=pki["foreign"]) as channel:
        stub = pb_grpc.AgentStub(channel)
        code, _ = code_of(lambda: stub.ListProcesses(pb.ListProcessesRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE  # no handshake, no call
    plain = grpc.insecure_channel(tls_agent.endpoint)
    with plain:
        code, _ = code_of(
            lambda: pb_grpc.AgentStub(plain).ListProcesses(pb.ListProcessesRequest(), timeout=5)
        )
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_dialer_expecting_another_node_does_not_reach_this_one(
    tls_agent: AgentProcess, pki: dict[str, Path]
) -> None:
    """An endpoint that points at the wrong agent (a redirected ServerlessNode) fails
    the handshake: the operator dials each agent by its node's TLS name."""
    with tls_agent.connect(tls=pki["operator"], node="other-node") as channel:
        stub = pb_grpc.AgentStub(channel)
        code, _ = code_of(lambda: stub.ListProcesses(pb.ListProcessesRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE


def test_another_agent_may_send_checkpoints_but_not_run_anything(
    tls_agent: AgentProcess, pki: dict[str, Path]
) -> None:
    with tls_agent.connect(tls=pki["peer"]) as channel:
        stub = pb_grpc.AgentStub(channel)
        spec = pb.ProcessSpec(name="x", argv=["sleep", "1"])
        code, details = code_of(lambda: stub.StartProcess(pb.StartProcessRequest(spec=spec)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == (
            "only the operator may call StartProcess; this call came from "
            "spiffe://serverlessos.io/node/other-node"
        )
        for call in (
            lambda: stub.ListProcesses(pb.ListProcessesRequest()),
            lambda: list(stub.WatchProcesses(pb.WatchProcessesRequest(), timeout=5)),
            lambda: list(stub.ReadLogs(pb.ReadLogsRequest(ref=pb.ProcessRef(name="x")))),
        ):
            assert code_of(call)[0] == grpc.StatusCode.PERMISSION_DENIED
        # A checkpoint passes the door (then stands or falls on its content).
        code, details = code_of(lambda: stub.ReceiveCheckpoint(iter([pb.CheckpointChunk()])))
        assert code != grpc.StatusCode.PERMISSION_DENIED, details
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
    # The operator may not pose as a sender of checkpoints either way round: it has none.
    code, _ = code_of(lambda: tls_agent.stub.ReceiveCheckpoint(iter([pb.CheckpointChunk()])))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_renewed_certificates_are_taken_and_bad_ones_are_not(
    tls_agent: AgentProcess, pki: dict[str, Path], tmp_path: Path
) -> None:
    # A renewal (a new key and certificate for this node, as the agent's renewal writes
    # them) is used from the next handshake on, without a restart.
    renewed = write_identity(tmp_path / "renewed", CA_OF[pki["agent"]], identity.node(NODE))
    for name in ("key.pem", "cert.pem"):
        (pki["agent"] / name).write_bytes((renewed / name).read_bytes())
    with tls_agent.connect() as channel:
        pb_grpc.AgentStub(channel).ListProcesses(pb.ListProcessesRequest(), timeout=5)
    assert "TLS credentials in" in tls_agent.log() and "renewed" in tls_agent.log()
    # Another node's certificate put there by mistake: refused, the renewed one kept.
    for name in ("key.pem", "cert.pem"):
        (pki["agent"] / name).write_bytes((pki["peer"] / name).read_bytes())
    with tls_agent.connect() as channel:
        pb_grpc.AgentStub(channel).ListProcesses(pb.ListProcessesRequest(), timeout=5)
    assert "keeping the TLS credentials in use" in tls_agent.log()
    assert "not this node's" in tls_agent.log()


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("missing", "TLS credentials in"),
        ("other-node", "not this node's"),
        ("foreign", "not issued by this CA"),
        ("mismatched", "are not one pair"),
        ("neither", "give --tls-dir DIR"),
    ],
)
def test_the_agent_refuses_to_start_without_its_own_credentials(
    pki: dict[str, Path], tmp_path: Path, what: str, expected: str
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    if what == "other-node":
        tls = pki["peer"]
    elif what == "foreign":
        tls = pki["foreign"]
        (tls / "ca.pem").write_bytes((pki["agent"] / "ca.pem").read_bytes())
    elif what == "mismatched":
        for name in ("ca.pem", "cert.pem"):
            (tls / name).write_bytes((pki["agent"] / name).read_bytes())
        (tls / "key.pem").write_bytes((pki["peer"] / "key.pem").read_bytes())
    args = [] if what == "neither" else ["--tls-dir", str(tls)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serverlessos_agent.cli.main",
            "serve",
            "--node-name",
            NODE,
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode != 0 and expected in result.stderr, result.stderr


def test_ctl_speaks_mutual_tls_to_the_node_it_names(
    tls_agent: AgentProcess, pki: dict[str, Path]
) -> None:
    tls_agent.run("seen", ["sleep", "300"])
    base = [
        sys.executable,
        "-m",
        "serverlessos_agent.cli.main",
        "ctl",
        "--agent",
        tls_agent.endpoint,
    ]
    ok = subprocess.run(
        [*base, "ps", "--tls-dir", str(pki["operator"]), "--node", NODE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0 and "seen" in ok.stdout, ok.stderr
    wrong = subprocess.run(
        [*base, "ps", "--tls-dir", str(pki["operator"]), "--node", "other-node", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 1 and "cannot reach the agent" in wrong.stderr
    plain = subprocess.run(
        [*base, "ps", "--timeout", "5"], capture_output=True, text=True, timeout=60, check=False
    )
    assert plain.returncode == 1


def test_the_operator_follows_an_agent_over_mutual_tls_by_its_node_name(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """The operator's own AgentPool and credentials against a real agent: it lists and
    follows it; the same endpoint taken for another node (a redirected ServerlessNode)
    is not reached."""
    ca = CA.create()
    agent = agent_factory(
        extra=["--tls-dir", str(write_identity(tmp_path / "agent", ca, identity.node(NODE)))],
        client_tls=write_identity(tmp_path / "operator", ca, OPERATOR),
    )
    agent.run("followed", ["sleep", "300"])
    credentials = OperatorCredentials(ca)

    async def scenario() -> tuple[list[str], grpc.StatusCode | None]:
        listed: list[str] = []
        synced = asyncio.Event()

        async def on_sync(node: str, processes: list[pb.Process]) -> None:
            listed.extend(f"{node}/{p.spec.name}" for p in processes)
            synced.set()

        async def on_event(node: str, process: pb.Process) -> None:
            return None

        pool = AgentPool(on_event, on_sync, credentials=credentials.channel_credentials)
        pool.set_endpoint(NODE, agent.endpoint)
        pool.set_endpoint("other-node", agent.endpoint)  # a lie about where it is
        try:
            await asyncio.wait_for(synced.wait(), 20)
            await pool.stub(NODE).GetNodeStats(pb.GetNodeStatsRequest(), timeout=5)
            try:
                await pool.stub("other-node").GetNodeStats(pb.GetNodeStatsRequest(), timeout=5)
                refused = None
            except grpc.aio.AioRpcError as exc:
                refused = exc.code()
        finally:
            await pool.close()
        return listed, refused

    listed, refused = asyncio.run(scenario())
    assert listed == [f"{NODE}/followed"]
    assert refused == grpc.StatusCode.UNAVAILABLE
