"""Bad input never crashes the agent and gets the right status with an actionable message."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
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
        ({"env": {"BIG": "x" * (128 * 1024)}}, INVALID, "takes at most 131071 per string"),
        ({"argv": ["sleep", "é" * (64 * 1024)]}, INVALID, "takes at most 131071 per string"),
        (
            {"env": {f"V{i}": "x" * 100_000 for i in range(3)}},
            INVALID,
            "at most 262144 are taken",
        ),
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


def test_an_environment_as_large_as_the_kernel_takes_starts(agent: AgentProcess) -> None:
    """About 200 KiB of environment used to break the hand-off to the fork server (one
    socket message past its buffer), and the start failed each time it was retried."""
    env = {"A": "a" * 100_000, "B": "b" * 100_000, "C": "é" * 20_000}
    running = agent.run("roomy", ["sh", "-c", 'echo "${#A} ${#B}"; sleep 300'], env=env)
    assert running.state == pb.PROCESS_STATE_RUNNING and running.pid > 0
    deadline = time.monotonic() + 10
    while agent.logs("roomy").strip() != b"100000 100000":
        assert time.monotonic() < deadline, agent.logs("roomy")
        time.sleep(0.05)


def test_a_node_keeps_at_most_max_processes(agent_factory) -> None:
    agent = agent_factory(extra=["--max-processes", "2"])
    agent.run("one", ["sleep", "300"])
    agent.run("two", ["sleep", "300"])
    with pytest.raises(grpc.RpcError) as err:
        agent.run("three", ["sleep", "300"])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-processes" in err.value.details()
    agent.stop("one")
    agent.run("three", ["sleep", "300"])  # room again


def test_streams_from_one_client_are_bounded_and_the_agent_stays_healthy(
    agent: AgentProcess,
) -> None:
    agent.run("seen", ["sleep", "300"])  # so that every watch from seq 0 has an event

    def watch() -> object:
        return agent.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=0), timeout=30)

    held = [watch() for _ in range(16)]
    try:
        for stream in held:
            next(stream)  # its first event: the agent holds this stream now
        extra = watch()
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 16 watch streams at once from one client" in err.value.details()
    finally:
        for stream in held:
            stream.cancel()
    assert agent.stub.ListProcesses(pb.ListProcessesRequest(), timeout=5) is not None
    deadline = time.monotonic() + 10
    while True:  # the cancelled streams give their slots back
        try:
            next(watch())
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_large_log_is_read_in_bounded_pieces(agent: AgentProcess) -> None:
    agent.run("chatty", ["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' 'x'; echo; sleep 300"])
    log = Path(agent.get("chatty").log_path)
    deadline = time.monotonic() + 20
    while not (log.exists() and log.stat().st_size > 20_000_000):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    request = pb.ReadLogsRequest(ref=pb.ProcessRef(namespace="default", name="chatty"))
    sizes = [len(c.data) for c in agent.stub.ReadLogs(request, timeout=30)]
    assert sum(sizes) == 20_000_001 and max(sizes) <= 64 * 1024
    tail = list(agent.stub.ReadLogs(pb.ReadLogsRequest(ref=request.ref, tail_lines=1)))
    assert len(b"".join(c.data for c in tail)) == 20_000_001  # one line, all of it
