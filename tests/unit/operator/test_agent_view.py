"""ServerlessProcess <-> agent: the start request a spec becomes, the status an agent's
record means, and the operator's record of a process read back from its object."""

from __future__ import annotations

from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.v1alpha1 import ServerlessProcess, ServerlessProcessSpec
from serverlessos_operator.processes.agent_view import start_request, status_from_agent
from serverlessos_operator.processes.book import ProcessInfo, request_of
from serverlessos_operator.scheduling.constraints import Taint

KWOK_TAINT = Taint("kwok.x-k8s.io/node", "fake", "NoSchedule")


SPEC = ServerlessProcessSpec.model_validate(
    {
        "command": ["python3", "-c"],
        "args": ["print('hi')"],
        "env": [{"name": "A", "value": "1"}],
        "resources": {"cpu": "250m", "memory": "64Mi"},
        "restartPolicy": "OnFailure",
        "tolerations": [
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
        ],
    }
)


def test_spec_to_agent_request() -> None:
    req = start_request("team", "job", "uid-1", SPEC, env={"A": "1"})
    assert list(req.spec.argv) == ["python3", "-c", "print('hi')"]
    assert dict(req.spec.env) == {"A": "1"}
    assert (req.spec.resources.cpu_millis, req.spec.resources.memory_bytes) == (250, 64 * 2**20)
    assert req.spec.restart_policy == pb.RESTART_POLICY_ON_FAILURE
    assert (req.spec.owner.namespace, req.spec.owner.uid) == ("team", "uid-1")
    plain = ServerlessProcessSpec.model_validate(
        {"command": ["x"], "resources": {"cpu": 2, "memory": 1024}}
    )
    assert (request_of(plain).cpu_millis, request_of(plain).memory_bytes) == (2000, 1024)
    assert request_of(SPEC).tolerations[0].tolerates(KWOK_TAINT)


def test_agent_record_to_status() -> None:
    running = pb.Process(state=pb.PROCESS_STATE_RUNNING, pid=42, restarts=1, uid="p1")
    running.started_at.FromSeconds(1_700_000_000)
    status = status_from_agent(running, "n1", [])
    assert status["phase"] == "Running" and status["pid"] == 42 and status["node"] == "n1"
    assert status["startedAt"] == "2023-11-14T22:13:20Z"
    ready = {c.type: c.status for c in status["conditions"]}
    assert ready == {"Scheduled": "True", "Ready": "True"}

    failed = pb.Process(state=pb.PROCESS_STATE_FAILED, restarts=0)
    failed.last_termination.reason = "OOMKilled"
    failed.last_termination.exit_code = 137
    failed.last_termination.message = "killed by the kernel's OOM killer"
    failed.last_termination.finished_at.FromSeconds(1_700_000_100)
    status = status_from_agent(failed, "n1", status["conditions"])
    assert (status["phase"], status["reason"], status["exitCode"]) == ("Failed", "OOMKilled", 137)
    assert status["finishedAt"] == "2023-11-14T22:15:00Z"
    assert status["pid"] is None
    backoff = status_from_agent(
        pb.Process(state=pb.PROCESS_STATE_BACKOFF, message="restarting"), "n1", []
    )
    assert (backoff["phase"], backoff["reason"]) == ("Running", "BackOff")


def test_a_process_is_read_back_from_its_object_with_its_labels_and_status() -> None:
    """After an operator restart the object is all it knows: labels (a ClusterCgroup's
    members), node, phase and conditions come from it."""
    obj = ServerlessProcess.model_validate(
        {
            "metadata": {
                "namespace": "ns",
                "name": "p",
                "uid": "u",
                "generation": 3,
                "labels": {"budget": "team"},
            },
            "spec": {"command": ["x"]},
            "status": {
                "phase": "Running",
                "node": "n1",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Running",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        }
    )
    info = ProcessInfo.from_object(obj)
    assert info.labels == {"budget": "team"} and info.generation == 3
    assert (info.node, info.phase, info.placed, info.waiting) == ("n1", "Running", True, False)
    assert info.conditions[0].true
