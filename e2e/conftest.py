"""e2e fixtures: a cluster from KUBECONFIG (default: the local one `make up` made).

Tests that kill the operator or an agent need the local cluster's process
handles (hack/operator.sh, .local/agents); they skip on other clusters.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA, cert_pem, key_pem, new_key

REPO = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("SERVERLESSOS_LOCAL", REPO / ".local"))
KUBECONFIG = os.environ.get("KUBECONFIG") or str(LOCAL / "kubeconfig")
CACHE_BIN = Path(os.environ.get("SERVERLESSOS_CACHE", Path.home() / ".cache/serverlessos")) / "bin"
IS_LOCAL = (LOCAL / "operator.pid").exists()
ENV = {
    **os.environ,
    "KUBECONFIG": KUBECONFIG,
    "PATH": f"{CACHE_BIN}:{REPO / '.venv/bin'}:{os.environ['PATH']}",
}
KWOK_TOLERATION = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]

local_only = pytest.mark.skipif(not IS_LOCAL, reason="needs the local cluster made by `make up`")


def run(
    *args: str, input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        input=input,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def kubectl(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(shutil.which("kubectl", path=ENV["PATH"]) or "kubectl", *args, **kw)


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


# Namespaces are "restricted" (the chart's admission policy): a non-root uid.
NON_ROOT = {"runAsUser": 1000}


def process_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serverlessos.io/v1alpha1",
        "kind": "ServerlessProcess",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tolerations": KWOK_TOLERATION, "securityContext": NON_ROOT, **spec},
    }


def apply(*manifests: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    return kubectl("apply", "-f", "-", input=body, check=check)


def wait_for(
    what: Callable[[], Any], timeout: float = 30.0, every: float = 0.2, message: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = what()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")


def status_of(name: str, namespace: str) -> dict[str, Any]:
    result = kubectl("get", "sp", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    return json.loads(result.stdout).get("status") or {}


def wait_phase(name: str, namespace: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
    """The status once the process reaches the phase."""
    return dict(
        wait_for(
            lambda: (s := status_of(name, namespace)).get("phase") == phase and s,
            timeout=timeout,
            every=0.1,
            message=f"{namespace}/{name} {phase}",
        )
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The status's condition of that type ({} if it has none)."""
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def wait_condition(
    name: str, namespace: str, type_: str, value: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The status once its condition of that type has that status ("True"/"False")."""
    return dict(
        wait_for(
            lambda: condition(s := status_of(name, namespace), type_).get("status") == value and s,
            timeout=timeout,
            message=f"{namespace}/{name} {type_}={value}",
        )
    )


def patch_spec(
    name: str, namespace: str, spec: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "patch",
        "sp",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        check=check,
    )


def agent_endpoint(node: str) -> str:
    return str(get_json("serverlessnode", node)["status"]["endpoint"])


# The local cluster's agents serve mutual TLS (hack/agents.sh) unless this says not.
AGENTS_TLS = os.environ.get("SERVERLESSOS_AGENT_TLS", "1") == "1"


@functools.cache
def operator_credentials() -> grpc.ChannelCredentials:
    """An operator identity from the cluster CA (Secret serverlessos-ca): what the
    agents take lifecycle calls from."""
    secret = get_json("secret", "serverlessos-ca", "-n", "serverlessos-system")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca = CA.load(data["tls.key"], data["tls.crt"])
    key = new_key()
    cert = ca.issue(key.public_key(), OPERATOR)
    return grpc.ssl_channel_credentials(ca.cert_pem, key_pem(key), cert_pem(cert))


def agent_channel(node: str, endpoint: str | None = None) -> grpc.Channel:
    """A channel to a node's agent, as the operator dials it."""
    endpoint = endpoint or agent_endpoint(node)
    if not AGENTS_TLS:
        return grpc.insecure_channel(endpoint)
    name = identity.node(node).tls_name
    return grpc.secure_channel(
        endpoint, operator_credentials(), [("grpc.ssl_target_name_override", name)]
    )


@pytest.fixture(scope="session")
def redis_server() -> str:
    """Redis from hack/install-redis.sh (hack/up.sh runs it), as its wrapper's path."""
    path = CACHE_BIN / "redis-server"
    if not path.exists():
        run(str(REPO / "hack/install-redis.sh"))
    return str(path)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl(
        "delete",
        "serverlessprocesses",
        "--all",
        "-n",
        name,
        "--wait=true",
        "--timeout=90s",
        check=False,
    )
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session", autouse=True)
def cluster_ready() -> None:
    if not Path(KUBECONFIG).exists():
        pytest.skip(f"no cluster: {KUBECONFIG} does not exist (run `make up`)")
    nodes = wait_for(
        lambda: get_json("serverlessnodes")["items"],
        timeout=60,
        message="no ServerlessNodes registered",
    )
    assert nodes
