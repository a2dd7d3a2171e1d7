"""/metrics (checked by promtool), the gRPC health service and server reflection."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(180)


def _scrape(agent: AgentProcess) -> str:
    with urllib.request.urlopen(f"http://{agent.metrics}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, metric: str, **labels: str) -> float:
    for line in text.splitlines():
        named = line.startswith((metric + "{", metric + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{metric}{labels} not found")


def test_metrics_are_served_and_pass_promtool(agent: AgentProcess, promtool: str) -> None:
    agent.run("metered", ["sh", "-c", "while :; do :; done"], cpu=200, memory=32 * 2**20)
    agent.run("restarter", ["false"], restart=pb.RESTART_POLICY_ALWAYS)
    agent.wait_for("restarter", lambda p: p.restarts >= 2)
    agent.stub.ListProcesses(pb.ListProcessesRequest())
    time.sleep(1.5)  # a few stats samples
    text = _scrape(agent)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""

    names = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert names and all(n.startswith("serverlessos_agent_") for n in names), names
    key = {"namespace": "default", "name": "metered"}
    assert _value(text, "serverlessos_agent_process_cpu_seconds_total", **key) > 0.1
    assert _value(text, "serverlessos_agent_process_memory_bytes", **key) > 0
    assert _value(text, "serverlessos_agent_process_cpu_throttled_seconds_total", **key) >= 0
    assert _value(text, "serverlessos_agent_process_cpu_limit_cores", **key) == 0.2
    assert _value(text, "serverlessos_agent_process_state", state="Running", **key) == 1
    assert (
        _value(
            text, "serverlessos_agent_process_restarts_total", namespace="default", name="restarter"
        )
        >= 2
    )
    assert (
        _value(
            text,
            "serverlessos_agent_node_pressure_stalled_seconds_total",
            resource="cpu",
            kind="some",
        )
        > 0
    )
    assert (
        _value(
            text, "serverlessos_agent_rpc_duration_seconds_count", method="StartProcess", code="OK"
        )
        == 2
    )
    assert (
        _value(
            text, "serverlessos_agent_rpc_duration_seconds_count", method="ListProcesses", code="OK"
        )
        >= 1
    )


def test_health_service_reports_serving(agent: AgentProcess) -> None:
    assert agent.channel is not None
    stub = health_pb2_grpc.HealthStub(agent.channel)
    for service in ("", "serverlessos.agent.v1alpha1.Agent"):
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_reflection_describes_the_api(agent: AgentProcess) -> None:
    assert agent.channel is not None
    db = ProtoReflectionDescriptorDatabase(agent.channel)
    services = set(db.get_services())
    assert "serverlessos.agent.v1alpha1.Agent" in services
    assert "grpc.health.v1.Health" in services
    desc = db.FindFileContainingSymbol("serverlessos.agent.v1alpha1.Agent")
    assert desc.package == "serverlessos.agent.v1alpha1"
