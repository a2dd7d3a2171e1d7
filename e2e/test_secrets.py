"""Environment from Secrets and ConfigMaps: read by the operator when the process starts,
seen by the process, and never written anywhere a reader of the cluster looks."""

from __future__ import annotations

import json

from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc

from .conftest import (
    agent_channel,
    apply,
    kubectl,
    process_manifest,
    run,
    status_of,
    wait_for,
    wait_phase,
)

SECRET = "pa55-" + "w0rd-e2e"  # never written out whole in this file's assertions' output


def test_a_secret_reaches_the_process_and_nothing_else(namespace: str) -> None:
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
    ]
    apply(
        process_manifest(
            "reader",
            namespace,
            command=["sh", "-c", 'echo "token=$TOKEN mode=$MODE"; sleep 3600'],
            env=env,
        )
    )
    # Without its Secret it waits, and says for what.
    status = wait_for(
        lambda: (s := status_of("reader", namespace)).get("reason") == "SecretNotFound" and s,
        timeout=30,
        message="waiting for its Secret",
    )
    assert "TOKEN waits for Secret 'creds'" in status["message"] and not status.get("node")
    kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=mode=fast")
    kubectl(
        "create", "secret", "generic", "creds", "-n", namespace, f"--from-literal=token={SECRET}"
    )
    running = wait_phase("reader", namespace, "Running", timeout=30)
    logs = wait_for(
        lambda: (
            "token=" in (out := run("kubectl-sos", "logs", "reader", "-n", namespace).stdout)
            and out
        ),
        timeout=15,
        message="its output",
    )
    assert logs.strip() == f"token={SECRET} mode=fast"
    # Not in its object, its Events, or what its agent answers.
    assert SECRET not in kubectl("get", "sp", "reader", "-n", namespace, "-o", "yaml").stdout
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert SECRET not in events and json.loads(events)["items"]
    with agent_channel(running["node"]) as channel:
        stub = pb_grpc.AgentStub(channel)
        ref = pb.ProcessRef(namespace=namespace, name="reader")
        process = stub.GetProcess(pb.GetProcessRequest(ref=ref), timeout=10)
        assert dict(process.spec.env) == {"TOKEN": "", "MODE": ""}
        listed = stub.ListProcesses(pb.ListProcessesRequest(namespace=namespace), timeout=10)
        assert SECRET not in str(listed)


def test_value_and_valuefrom_together_are_refused(namespace: str) -> None:
    both = {"name": "X", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    result = apply(process_manifest("both", namespace, command=["x"], env=[both]), check=False)
    assert result.returncode != 0 and "a variable takes a value or valueFrom, not both" in (
        result.stderr
    )
    neither = {"name": "X", "valueFrom": {}}
    result = apply(
        process_manifest("neither", namespace, command=["x"], env=[neither]), check=False
    )
    assert result.returncode != 0 and "exactly one of secretKeyRef and configMapKeyRef" in (
        result.stderr
    )
