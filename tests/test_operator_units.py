"""The operator's plain code, called directly: placement, mapping, DaemonSet, config."""

from __future__ import annotations

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.v1alpha1 import ServerlessProcess
from serverlessos_operator.config import OperatorConfig
from serverlessos_operator.daemonset import manifest
from serverlessos_operator.placement import LeastPressure, NodeView, Request, Taint, Toleration
from serverlessos_operator.process import (
    request_of,
    set_condition,
    start_request,
    status_from_agent,
)

KWOK_TAINT = Taint("kwok.x-k8s.io/node", "fake", "NoSchedule")
TOLERATE_KWOK = Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")


def node(name: str, **kw) -> NodeView:
    return NodeView(
        name=name,
        ready=kw.pop("ready", True),
        cpu_millis=kw.pop("cpu", 4000),
        memory_bytes=kw.pop("mem", 8 * 2**30),
        **kw,
    )


def test_least_pressure_prefers_emptier_and_calmer_nodes() -> None:
    req = Request(cpu_millis=500, memory_bytes=2**28)
    nodes = [node("a", reserved_cpu_millis=3000), node("b"), node("c", cpu_pressure=40.0)]
    assert LeastPressure().place(req, nodes).node == "b"


def test_filters_explain_why_nothing_fits() -> None:
    req = Request(cpu_millis=64000, memory_bytes=2**28)
    d = LeastPressure().place(req, [node("a"), node("b", ready=False)])
    assert d.node is None
    assert d.reason == "0/2 nodes fit: 1 insufficient cpu, 1 not ready"
    assert LeastPressure().place(req, []).reason == "no nodes with a ServerlessOS agent"


def test_node_selector_and_taints() -> None:
    tainted = node("kwok", taints=(KWOK_TAINT,), labels={"type": "kwok"})
    plain = node("plain", labels={"type": "metal"})
    req = Request(100, 2**20, node_selector={"type": "kwok"})
    assert (
        LeastPressure()
        .place(req, [tainted, plain])
        .reason.endswith(
            "1 node selector type=kwok, 1 untolerated taint kwok.x-k8s.io/node=fake:NoSchedule"
        )
    )
    ok = Request(100, 2**20, node_selector={"type": "kwok"}, tolerations=(TOLERATE_KWOK,))
    assert LeastPressure().place(ok, [tainted, plain]).node == "kwok"


def test_a_burst_spreads_when_reservations_are_counted() -> None:
    placer, reserved, placed = LeastPressure(), {"a": 0, "b": 0, "c": 0}, []
    for _ in range(9):
        views = [node(n, reserved_cpu_millis=r) for n, r in reserved.items()]
        choice = placer.place(Request(500, 2**20), views).node
        assert choice is not None
        reserved[choice] += 500
        placed.append(choice)
    assert sorted(placed.count(n) for n in "abc") == [3, 3, 3]


SPEC = {
    "command": ["python3", "-c"],
    "args": ["print('hi')"],
    "env": [{"name": "A", "value": "1"}],
    "resources": {"cpu": "250m", "memory": "64Mi"},
    "restartPolicy": "OnFailure",
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def test_spec_to_agent_request() -> None:
    req = start_request("team", "job", "uid-1", SPEC)
    assert list(req.spec.argv) == ["python3", "-c", "print('hi')"]
    assert dict(req.spec.env) == {"A": "1"}
    assert (req.spec.resources.cpu_millis, req.spec.resources.memory_bytes) == (250, 64 * 2**20)
    assert req.spec.restart_policy == pb.RESTART_POLICY_ON_FAILURE
    assert (req.spec.owner.namespace, req.spec.owner.uid) == ("team", "uid-1")
    assert (
        request_of({"command": ["x"], "resources": {"cpu": 2, "memory": 1024}}).cpu_millis == 2000
    )
    assert request_of(SPEC).tolerations[0].tolerates(KWOK_TAINT)


def test_agent_record_to_status() -> None:
    running = pb.Process(state=pb.PROCESS_STATE_RUNNING, pid=42, restarts=1, uid="p1")
    running.started_at.FromSeconds(1_700_000_000)
    status = status_from_agent(running, "n1", [])
    assert status["phase"] == "Running" and status["pid"] == 42 and status["node"] == "n1"
    assert status["startedAt"] == "2023-11-14T22:13:20Z"
    ready = {c["type"]: c["status"] for c in status["conditions"]}
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


def test_conditions_keep_transition_time_when_unchanged() -> None:
    first = set_condition([], "Ready", True, "Running")
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = set_condition(first, "Ready", True, "Running")
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = set_condition(first, "Ready", False, "Error", "exited 1")
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert flipped[0]["message"] == "exited 1"


def test_pydantic_model_reads_a_manifest() -> None:
    sp = ServerlessProcess.model_validate({"spec": {"command": ["sleep", "1"]}})
    assert sp.spec.resources.cpu == "100m" and sp.spec.restart_policy == "Always"
    with pytest.raises(ValueError):
        ServerlessProcess.model_validate({"spec": {"command": []}})


def test_daemonset_from_config() -> None:
    config = OperatorConfig.from_env(
        {
            "SERVERLESSOS_NAMESPACE": "sos",
            "SERVERLESSOS_AGENT_IMAGE": "reg/agent:1",
            "SERVERLESSOS_AGENT_ARGS": '["--stats-interval=5s"]',
            "SERVERLESSOS_AGENT_TOLERATIONS": '[{"operator": "Exists"}]',
            "SERVERLESSOS_AGENT_NODE_SELECTOR": '{"role": "worker"}',
        }
    )
    ds = manifest(config)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert ds["metadata"]["namespace"] == "sos"
    assert container["image"] == "reg/agent:1"
    assert container["args"][-1] == "--stats-interval=5s"
    assert "--in-cluster" in container["args"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["nodeSelector"] == {"role": "worker"}
    assert pod["hostPID"] and container["securityContext"]["privileged"]


def test_bad_json_in_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SERVERLESSOS_AGENT_ARGS is not valid JSON"):
        OperatorConfig.from_env({"SERVERLESSOS_AGENT_ARGS": "[oops"})
