"""An agent gets its node's certificate from the operator (a CertificateSigningRequest
with a node-bound token, as a DaemonSet pod's), and only its own node's.

Local cluster only: it runs an agent on this machine for a Node object of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA, cert_pem, key_pem, load_cert, new_key

from .conftest import KUBECONFIG, REPO, get_json, kubectl, local_only, wait_for

pytestmark = [local_only, pytest.mark.timeout(240)]
CGROUP = Path("/sys/fs/cgroup")


def cluster_ca() -> CA:
    secret = get_json("secret", "serverlessos-ca", "-n", "serverlessos-system")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    return CA.load(data["tls.key"], data["tls.crt"])


def node_bound_kubeconfig(node: str, path: Path) -> Path:
    """The agents' ServiceAccount, with a token bound to `node` (what a pod's has)."""
    token = kubectl(
        "create",
        "token",
        "serverlessos-agent",
        "-n",
        "serverlessos-system",
        "--bound-object-kind",
        "Node",
        "--bound-object-name",
        node,
        "--duration",
        "10m",
    ).stdout.strip()
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "agent"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    return path


@contextlib.contextmanager
def node_object(name: str) -> Iterator[str]:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"serverlessos.io/e2e": "tls"}},
        "spec": {"taints": [{"key": "e2e-tls", "effect": "NoSchedule"}]},
    }
    kubectl("apply", "-f", "-", input=json.dumps(node))
    try:
        yield name
    finally:
        kubectl("delete", "serverlessnode", name, "--ignore-not-found", check=False)
        kubectl("delete", "node", name, "--ignore-not-found", check=False)


def start_agent(name: str, kubeconfig: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    state, root = tmp / f"state-{name}", f"sos-e2e-tls-{uuid.uuid4().hex[:6]}"
    state.mkdir()
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serverlessos_agent.cli.main",
            "serve",
            "--node-name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(state),
            "--cgroup-root",
            root,
            "--kubeconfig",
            str(kubeconfig),
            "--tls-dir",
            str(state / "tls"),
            "--tls-bootstrap",
        ],
        stdout=log,
        stderr=log,
        cwd=REPO,
        start_new_session=True,
    )
    log.close()
    proc.cgroup_root = root  # type: ignore[attr-defined]
    return proc, state


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    root = proc.cgroup_root  # type: ignore[attr-defined]
    for hierarchy in [CGROUP, *(p for p in CGROUP.iterdir() if p.is_dir())]:
        base = hierarchy / root
        if base.is_dir():
            for group in sorted(base.rglob("*"), key=lambda p: -len(p.parts)):
                if group.is_dir():
                    with contextlib.suppress(OSError):
                        group.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def test_an_agent_gets_its_own_nodes_certificate_and_only_that(tmp_path: Path) -> None:
    name = f"sos-tls-{uuid.uuid4().hex[:6]}"
    with node_object(name):
        kubeconfig = node_bound_kubeconfig(name, tmp_path / "agent.kubeconfig")
        agent, state = start_agent(name, kubeconfig, tmp_path)
        try:
            ready = state / "agent.json"
            wait_for(
                lambda: ready.exists() or agent.poll() is not None,
                timeout=60,
                message="the agent serving with its certificate",
            )
            assert agent.poll() is None, (tmp_path / f"{name}.log").read_text()
            ca = cluster_ca()
            cert = load_cert((state / "tls" / "cert.pem").read_bytes())
            assert ca.verify(cert) == identity.node(name)
            assert (state / "tls" / "key.pem").stat().st_mode & 0o077 == 0
            # The operator's identity gets in; the agent answers as node `name`.
            key = new_key()
            operator = tmp_path / "operator"
            operator.mkdir()
            (operator / "key.pem").write_bytes(key_pem(key))
            (operator / "cert.pem").write_bytes(cert_pem(ca.issue(key.public_key(), OPERATOR)))
            credentials = grpc.ssl_channel_credentials(
                ca.cert_pem,
                (operator / "key.pem").read_bytes(),
                (operator / "cert.pem").read_bytes(),
            )
            endpoint = json.loads(ready.read_text())["grpc"]
            options = [("grpc.ssl_target_name_override", identity.node(name).tls_name)]
            with grpc.secure_channel(endpoint, credentials, options) as channel:
                stub = pb_grpc.AgentStub(channel)
                assert stub.ListProcesses(pb.ListProcessesRequest(), timeout=10).processes == []
            approved = [
                c
                for c in get_json("csr")["items"]
                if c["spec"]["signerName"] == "serverlessos.io/agent"
                and c["spec"].get("extra", {}).get("authentication.kubernetes.io/node-name")
                == [name]
            ]
            assert approved and any(
                cond["type"] == "Approved" for cond in approved[-1]["status"]["conditions"]
            )
        finally:
            stop_agent(agent)

        # The same token for an agent that claims to be another node: refused, and it
        # says so instead of serving.
        liar, _ = start_agent(f"{name}-x", kubeconfig, tmp_path)
        try:
            wait_for(lambda: liar.poll() is not None, timeout=60, message="the liar to be refused")
            said = (tmp_path / f"{name}-x.log").read_text()
            assert liar.returncode != 0 and "refused this node's certificate" in said, said
            assert "may ask only for" in said
        finally:
            stop_agent(liar)
    for csr in get_json("csr")["items"]:
        if csr["metadata"]["name"].startswith(f"serverlessos-{name}"):
            kubectl("delete", "csr", csr["metadata"]["name"], check=False)


def test_an_agent_writes_only_its_own_nodes_serverlessnode(tmp_path: Path) -> None:
    """The chart's admission rule: a token bound to one node may not write another
    node's ServerlessNode, nor may an agent token bound to no node."""
    suffix = uuid.uuid4().hex[:6]
    with node_object(f"e2e-own-{suffix}") as mine, node_object(f"e2e-other-{suffix}") as other:
        own = node_bound_kubeconfig(mine, tmp_path / "own")
        for name in (mine, other):  # made by the admin, as if each agent had registered
            kubectl("apply", "-f", "-", input=json.dumps(serverless_node(name)))

        def patch_status(kubeconfig: Path, name: str) -> subprocess.CompletedProcess[str]:
            return kubectl(
                "--kubeconfig",
                str(kubeconfig),
                "patch",
                "serverlessnode",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"endpoint": "10.0.0.66:7420"}}),
                check=False,
            )

        assert patch_status(own, mine).returncode == 0
        refused = patch_status(own, other)
        assert refused.returncode != 0
        assert f"this token is bound to node {mine}, not {other}" in refused.stderr
        unbound = tmp_path / "unbound"
        token = kubectl(
            "create",
            "token",
            "serverlessos-agent",
            "-n",
            "serverlessos-system",
            "--duration",
            "10m",
        ).stdout.strip()
        config = json.loads(own.read_text())
        config["users"][0]["user"]["token"] = token
        unbound.write_text(json.dumps(config))
        refused = patch_status(unbound, mine)
        assert refused.returncode != 0 and "only with a token bound to its node" in refused.stderr
        endpoint = get_json("serverlessnode", other).get("status", {}).get("endpoint")
        assert endpoint != "10.0.0.66:7420"


def serverless_node(name: str) -> dict[str, object]:
    return {
        "apiVersion": "serverlessos.io/v1alpha1",
        "kind": "ServerlessNode",
        "metadata": {"name": name},
        "spec": {},
    }
