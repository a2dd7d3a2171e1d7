"""The operator's plain code, called directly: mapping, DaemonSet, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.v1alpha1 import ServerlessProcess
from serverlessos_operator.config import OperatorConfig
from serverlessos_operator.controller import ProcessInfo
from serverlessos_operator.daemonset import manifest
from serverlessos_operator.placement import Taint
from serverlessos_operator.process import (
    request_of,
    set_condition,
    start_request,
    status_from_agent,
)

KWOK_TAINT = Taint("kwok.x-k8s.io/node", "fake", "NoSchedule")


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


def test_orchestration_settings_from_helm_values() -> None:
    """The chart's defaults are the code's defaults, passed the way the chart passes them."""
    values = yaml.safe_load(
        (Path(__file__).parents[3] / "charts/serverlessos/values.yaml").read_text()
    )
    env = {
        "SERVERLESSOS_PLACEMENT": json.dumps(values["placement"]),
        "SERVERLESSOS_REBALANCING": json.dumps(values["rebalancing"]),
        "SERVERLESSOS_CLUSTER_CGROUPS": json.dumps(values["clusterCgroups"]),
        "SERVERLESSOS_USAGE_INTERVAL": str(values["operator"]["usageIntervalSeconds"]),
    }
    assert OperatorConfig.from_env(env) == OperatorConfig.from_env({})
    custom = OperatorConfig.from_env(
        {"SERVERLESSOS_REBALANCING": '{"enabled": false, "highWatermark": 90, "hotIntervals": 5}'}
    )
    assert not custom.rebalancing_enabled
    assert (custom.rebalancing.high_watermark, custom.rebalancing.hot_intervals) == (90, 5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVERLESSOS_PLACEMENT": '{"choises": 3}'}, "unknown setting.s. choises"),
        ({"SERVERLESSOS_REBALANCING": '{"highWatermark": "80%"}'}, "highWatermark must be a"),
        ({"SERVERLESSOS_REBALANCING": '{"enabled": 1}'}, "enabled must be true or false"),
        ({"SERVERLESSOS_REBALANCING": '{"lowWatermark": 90}'}, "must be below highWatermark"),
        ({"SERVERLESSOS_CLUSTER_CGROUPS": "[]"}, "must be a JSON object"),
    ],
)
def test_bad_orchestration_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorConfig.from_env(env)


def test_a_process_round_trips_through_its_body_with_its_labels() -> None:
    """The placing loop retries from to_body(): losing labels would drop a process out of
    its ClusterCgroup (and past its memory budget)."""
    body = {
        "metadata": {"namespace": "ns", "name": "p", "uid": "u", "labels": {"budget": "team"}},
        "spec": {"command": ["x"]},
    }
    info = ProcessInfo.from_body(body)
    assert ProcessInfo.from_body(info.to_body()).labels == {"budget": "team"}
