"""Bad input never crashes the agent and gets the right status with an actionable message."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import IS_ROOT, AgentProcess

pytestmark = pytest.mark.timeout(120)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _start_error(agent: AgentProcess, **spec_fields) -> grpc.RpcError:
    spec = pb.ProcessSpec(**{"name": "p", "argv": ["sleep", "1"], **spec_fields})
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=10)
    return err.value


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"argv": []}, INVALID, "argv is empty"),
        ({"argv": [""]}, INVALID, "argv[0]"),
        ({"name": ""}, INVALID, "name must not be empty"),
        ({"name": "Bad_Name"}, INVALID, "DNS-1123"),
        ({"name": "x" * 64}, INVALID, "DNS-1123"),
        ({"owner": pb.Owner(namespace="Team A")}, INVALID, "namespace"),
        ({"resources": pb.Resources(cpu_millis=-100)}, INVALID, "negative"),
        ({"resources": pb.Resources(memory_bytes=-1)}, INVALID, "negative"),
        ({"resources": pb.Resources(cpu_millis=5)}, INVALID, "below 10m"),
        ({"resources": pb.Resources(cpu_millis=10**9)}, INVALID, "exceeds this node's capacity"),
        ({"resources": pb.Resources(memory_bytes=1000)}, INVALID, "below the minimum"),
        ({"resources": pb.Resources(memory_bytes=2**62)}, INVALID, "exceeds this node's memory"),
        ({"working_dir": "relative/dir"}, INVALID, "absolute path"),
        ({"env": {"1BAD": "x"}}, INVALID, "environment variable name"),
    ],
)
def test_start_rejects_bad_specs(agent: AgentProcess, fields, code, words) -> None:
    err = _start_error(agent, **fields)
    assert err.code() == code
    assert words in err.details()
    # nothing was left behind, and the agent is still serving
    assert agent.stub.ListProcesses(pb.ListProcessesRequest()).processes == []


def test_duplicate_name_is_already_exists(agent: AgentProcess) -> None:
    agent.run("twin", ["sleep", "300"])
    with pytest.raises(grpc.RpcError) as err:
        agent.run("twin", ["sleep", "300"])
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "twin" in err.value.details()
    # the same name in another namespace is a different process
    assert agent.run("twin", ["sleep", "300"], namespace="other").state == pb.PROCESS_STATE_RUNNING


def test_unknown_names_are_not_found(agent: AgentProcess) -> None:
    ref = pb.ProcessRef(name="nobody-here")
    calls = [
        lambda: agent.stub.GetProcess(pb.GetProcessRequest(ref=ref)),
        lambda: agent.stub.StopProcess(pb.StopProcessRequest(ref=ref)),
        lambda: agent.stub.UpdateResources(pb.UpdateResourcesRequest(ref=ref)),
        lambda: list(agent.stub.ReadLogs(pb.ReadLogsRequest(ref=ref))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nobody-here" in err.value.details()


def test_bad_update_is_invalid_and_changes_nothing(agent: AgentProcess) -> None:
    agent.run("steady", ["sleep", "300"], cpu=200)
    ref = pb.ProcessRef(name="steady")
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.UpdateResources(
            pb.UpdateResourcesRequest(ref=ref, resources=pb.Resources(cpu_millis=-5))
        )
    assert err.value.code() == INVALID
    assert agent.get("steady").spec.resources.cpu_millis == 200


def test_bad_ref_name_is_invalid(agent: AgentProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.GetProcess(pb.GetProcessRequest(ref=pb.ProcessRef(name="../etc")))
    assert err.value.code() == INVALID


@pytest.mark.skipif(not IS_ROOT, reason="drops privileges from root")
def test_without_cap_sys_admin_start_is_failed_precondition(agent_factory) -> None:
    weak = agent_factory(wrap=["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"])
    err = _start_error(weak)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "CAP_SYS_ADMIN" in err.details()
    assert weak.proc is not None and weak.proc.poll() is None, "the agent keeps serving"


@pytest.mark.skipif(not IS_ROOT, reason="switches from root to an unprivileged user")
def test_unprivileged_user_gets_failed_precondition_naming_what_is_missing(agent_factory) -> None:
    # Under /tmp, not pytest's tmp_path: that one is private to root.
    state = Path(tempfile.mkdtemp(prefix="sos-unpriv-"))
    os.chown(state, 65534, 65534)
    try:
        weak = agent_factory(
            wrap=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
            state_dir=state,
        )
        err = _start_error(weak)
        weak.kill9()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cgroup" in err.details() and "permission denied" in err.details()
    assert "CAP_SYS_ADMIN" in err.details()
