"""`kubectl sos logs` goes through the API server (the operator's log API behind an
APIService) and Kubernetes RBAC decides who reads which namespace's output, as for
`kubectl logs`: no user needs, or gets, a route to the agents."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ENV, KUBECONFIG, REPO, apply, kubectl, process_manifest, wait_phase

pytestmark = pytest.mark.timeout(180)
SOS = str(REPO / ".venv/bin/kubectl-sos")


def service_account_kubeconfig(namespace: str, name: str, path: Path) -> Path:
    kubectl("create", "serviceaccount", name, "-n", namespace)
    token = kubectl("create", "token", name, "-n", namespace, "--duration", "10m").stdout.strip()
    admin = yaml.safe_load(Path(KUBECONFIG).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": name}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    return path


def sos_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [SOS, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_rbac_decides_who_reads_a_process_log(namespace: str, tmp_path: Path) -> None:
    apply(
        process_manifest(
            "talker",
            namespace,
            command=["sh", "-c", "echo hello from talker; while true; do sleep 1; echo tick; done"],
        )
    )
    wait_phase("talker", namespace, "Running", timeout=60)
    reader = service_account_kubeconfig(namespace, "reader", tmp_path / "reader")
    outsider = service_account_kubeconfig(namespace, "outsider", tmp_path / "outsider")
    kubectl(
        "create",
        "rolebinding",
        "reader-view",
        "-n",
        namespace,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:reader",
    )
    # The view role holds serverlessprocesses/log through the chart's aggregated role.
    deadline = time.monotonic() + 30
    while (result := sos_as(reader, "-n", namespace, "logs", "talker")).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.5)
    assert result.stdout.startswith("hello from talker\n")

    refused = sos_as(outsider, "-n", namespace, "logs", "talker")
    assert refused.returncode == 1 and "hello" not in refused.stdout
    assert (
        f'User "system:serviceaccount:{namespace}:outsider" cannot get resource '
        f'"serverlessprocesses/log" in API group "logs.serverlessos.io"'
    ) in refused.stderr, refused.stderr
    # View in one namespace reads nothing in another.
    other = sos_as(reader, "-n", "default", "logs", "talker")
    assert other.returncode == 1 and "cannot get resource" in other.stderr, other.stderr

    # Following streams through the aggregator: lines arrive while the process runs.
    env = {**ENV, "KUBECONFIG": str(reader)}
    follow = subprocess.Popen(
        [SOS, "-n", namespace, "logs", "-f", "--tail", "1", "talker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert follow.stdout is not None
        lines = [follow.stdout.readline() for _ in range(3)]
        assert lines == ["tick\n"] * 3, lines
    finally:
        follow.terminate()
        follow.wait(10)


def test_the_log_api_says_what_is_wrong(namespace: str) -> None:
    missing = subprocess.run(
        [SOS, "-n", namespace, "logs", "nobody"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert f'serverlessprocesses "nobody" not found in {namespace} (404)' in missing.stderr
    found = json.loads(kubectl("get", "--raw", "/apis/logs.serverlessos.io/v1alpha1").stdout)
    assert [r["name"] for r in found["resources"]] == ["serverlessprocesses/log"]
    assert (
        kubectl(
            "get",
            "apiservice",
            "v1alpha1.logs.serverlessos.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Available')].status}",
        ).stdout
        == "True"
    )
