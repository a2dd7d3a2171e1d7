"""Start, exit, stop, restart policies, logs and live limit changes, on a real agent."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)

RUNNING = pb.PROCESS_STATE_RUNNING


def test_start_runs_in_own_pid_namespace_and_cgroup(agent: AgentProcess) -> None:
    p = agent.run("sleeper", ["sleep", "300"], cpu=500, memory=64 * 2**20)
    assert p.state == RUNNING
    assert p.pid > 0
    status = Path(f"/proc/{p.pid}/status").read_text()
    nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()
    assert nspid[1:] == [str(p.pid), "1"], "PID 1 of its own PID namespace"
    assert os.readlink(f"/proc/{p.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    cgroups = Path(f"/proc/{p.pid}/cgroup").read_text()
    assert f"memory:/{agent.cgroup_root}/default/sleeper" in cgroups
    assert f"cpu:/{agent.cgroup_root}/default/sleeper" in cgroups
    # stdin is /dev/null, stdout/stderr the log file, nothing else inherited.
    fds = {fd: os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")}
    assert fds == {"0": "/dev/null", "1": p.log_path, "2": p.log_path}
    assert (agent.cgroup_dir("cpu", "sleeper") / "cpu.cfs_quota_us").read_text().strip() == "50000"
    limit = (agent.cgroup_dir("memory", "sleeper") / "memory.limit_in_bytes").read_text()
    assert int(limit) == 64 * 2**20


def test_exit_codes_and_signals_are_reported_distinctly(agent: AgentProcess) -> None:
    agent.run("ok", ["true"])
    agent.run("err", ["sh", "-c", "exit 3"])
    # PID 1 of a namespace ignores signals it has no handler for (only SIGKILL is
    # forced), so the killing signal comes from outside, as a node's OOM or an admin would.
    sig_pid = agent.run("sig", ["sleep", "300"]).pid
    os.kill(sig_pid, signal.SIGKILL)
    ok = agent.wait_for("ok", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    assert (ok.last_termination.reason, ok.last_termination.exit_code) == ("Completed", 0)
    err = agent.wait_for("err", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    assert (err.last_termination.reason, err.last_termination.exit_code) == ("Error", 3)
    assert err.last_termination.signal == 0
    sig = agent.wait_for("sig", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    assert sig.last_termination.reason == "Signaled"
    assert sig.last_termination.signal == signal.SIGKILL
    assert "SIGKILL" in sig.last_termination.message


def test_missing_binary_is_reported_failed_with_exec_error(agent: AgentProcess) -> None:
    p = agent.run("ghost", ["/no/such/binary", "x"])
    assert p.state == pb.PROCESS_STATE_FAILED
    assert p.last_termination.reason == "StartError"
    assert "/no/such/binary" in p.last_termination.message
    assert "No such file or directory" in p.last_termination.message


def test_missing_working_dir_is_a_start_error(agent: AgentProcess) -> None:
    p = agent.run("nowhere", ["true"], workdir="/no/such/dir")
    assert p.state == pb.PROCESS_STATE_FAILED
    assert "chdir" in p.last_termination.message and "/no/such/dir" in p.last_termination.message


def test_env_and_working_dir_reach_the_process(agent: AgentProcess) -> None:
    """The working directory is a path in the process's own tree (/tmp is its own)."""
    agent.run(
        "env",
        ["sh", "-c", 'echo "$GREETING from $(pwd)"'],
        env={"GREETING": "hello"},
        workdir="/tmp",
    )
    agent.wait_for("env", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    assert agent.logs("env") == b"hello from /tmp\n"
    agent.run("default", ["sh", "-c", "pwd"])
    agent.wait_for("default", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    assert agent.logs("default") == b"/work\n"  # its private directory


def test_stop_sends_sigterm_then_removes_everything(agent: AgentProcess) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.05; done"
    p = agent.run("graceful", ["sh", "-c", script])
    time.sleep(0.3)  # let the trap be installed
    stopped = agent.stop("graceful", grace=10)
    assert stopped.state == pb.PROCESS_STATE_STOPPED
    assert stopped.last_termination.reason == "Completed", stopped.last_termination
    assert (
        not os.path.exists(f"/proc/{p.pid}")
        or "Z" in Path(f"/proc/{p.pid}/stat").read_text().split()[2]
    )
    assert not agent.cgroup_dir("memory", "graceful").exists()
    with pytest.raises(grpc.RpcError) as err:
        agent.get("graceful")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_kills_after_grace_when_sigterm_is_ignored(agent: AgentProcess) -> None:
    # PID 1 of a namespace ignores signals it has no handler for, as in containers.
    agent.run("stubborn", ["sleep", "300"])
    started = time.monotonic()
    stopped = agent.stop("stubborn", grace=0.5)
    assert 0.4 < time.monotonic() - started < 10
    assert stopped.last_termination.signal == signal.SIGKILL


def test_restart_policy_always_restarts_with_backoff(agent: AgentProcess) -> None:
    agent.run("flappy", ["sh", "-c", "echo run; exit 0"], restart=pb.RESTART_POLICY_ALWAYS)
    p = agent.wait_for("flappy", lambda p: p.restarts >= 3)
    assert p.last_termination.reason == "Completed"
    assert agent.logs("flappy").count(b"run") >= 3


def test_restart_policy_on_failure(agent: AgentProcess) -> None:
    agent.run("fails", ["sh", "-c", "exit 1"], restart=pb.RESTART_POLICY_ON_FAILURE)
    agent.run("succeeds", ["true"], restart=pb.RESTART_POLICY_ON_FAILURE)
    assert agent.wait_for("fails", lambda p: p.restarts >= 2).last_termination.exit_code == 1
    done = agent.wait_for("succeeds", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    time.sleep(1.0)
    assert agent.get("succeeds").restarts == done.restarts == 0


def test_restart_policy_never(agent: AgentProcess) -> None:
    agent.run("once", ["sh", "-c", "exit 2"], restart=pb.RESTART_POLICY_NEVER)
    agent.wait_for("once", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    time.sleep(1.0)
    assert agent.get("once").restarts == 0


def test_backoff_grows_between_restarts(agent: AgentProcess) -> None:
    # --restart-backoff 0.2 --restart-backoff-max 1: delays 0.2, 0.4, 0.8, 1, 1 ...
    agent.run("crash", ["false"], restart=pb.RESTART_POLICY_ALWAYS)
    starts = []
    stream = agent.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=0), timeout=15)
    for event in stream:
        if event.type in (pb.EVENT_TYPE_STARTED, pb.EVENT_TYPE_RESTARTED):
            starts.append(event.time.ToNanoseconds() / 1e9)
        if len(starts) == 5:
            stream.cancel()
            break
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.15 and gaps[2] >= 0.7, gaps
    assert gaps[1] > gaps[0] and gaps[2] > gaps[1], gaps


def test_logs_tail_and_follow(agent: AgentProcess) -> None:
    agent.run(
        "talker", ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.5; echo late"]
    )
    agent.wait_for("talker", lambda p: b"line5" in agent.logs("talker"), timeout=10)
    assert agent.logs("talker", tail=2) == b"line4\nline5\n"
    req = pb.ReadLogsRequest(ref=pb.ProcessRef(name="talker"), tail_lines=1, follow=True)
    followed = b"".join(c.data for c in agent.stub.ReadLogs(req, timeout=20))
    # follow ends by itself once the process has ended for good
    assert followed == b"line5\nlate\n"


def test_update_resources_takes_effect_live(agent: AgentProcess) -> None:
    p = agent.run("elastic", ["sleep", "300"], cpu=200, memory=64 * 2**20)
    ref = pb.ProcessRef(name="elastic")
    new = pb.Resources(cpu_millis=1500, memory_bytes=128 * 2**20)
    updated = agent.stub.UpdateResources(pb.UpdateResourcesRequest(ref=ref, resources=new))
    assert updated.pid == p.pid and updated.state == RUNNING
    assert updated.spec.resources == new
    quota = (agent.cgroup_dir("cpu", "elastic") / "cpu.cfs_quota_us").read_text().strip()
    assert quota == "150000"
    limit = (agent.cgroup_dir("memory", "elastic") / "memory.limit_in_bytes").read_text()
    assert int(limit) == 128 * 2**20
    unlimited = pb.Resources()
    agent.stub.UpdateResources(pb.UpdateResourcesRequest(ref=ref, resources=unlimited))
    assert (agent.cgroup_dir("cpu", "elastic") / "cpu.cfs_quota_us").read_text().strip() == "-1"


def test_update_refuses_memory_below_current_use(agent: AgentProcess) -> None:
    agent.run("hog", ["python3", "-c", "a = bytearray(60 * 2**20); import time; time.sleep(300)"])
    agent.wait_for("hog", lambda p: True)
    time.sleep(1.0)  # let it allocate
    ref = pb.ProcessRef(name="hog")
    with pytest.raises(grpc.RpcError) as err:
        agent.stub.UpdateResources(
            pb.UpdateResourcesRequest(ref=ref, resources=pb.Resources(memory_bytes=16 * 2**20))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "below" in err.value.details()
    assert agent.get("hog").state == RUNNING


def test_list_and_namespaces(agent: AgentProcess) -> None:
    agent.run("a", ["sleep", "300"], namespace="team-a")
    agent.run("a", ["sleep", "300"], namespace="team-b")
    everything = agent.stub.ListProcesses(pb.ListProcessesRequest())
    assert {(p.spec.owner.namespace, p.spec.name) for p in everything.processes} == {
        ("team-a", "a"),
        ("team-b", "a"),
    }
    only_a = agent.stub.ListProcesses(pb.ListProcessesRequest(namespace="team-a"))
    assert [p.spec.owner.namespace for p in only_a.processes] == ["team-a"]
    assert everything.revision >= 2


def test_node_stats(agent: AgentProcess) -> None:
    agent.run("busy", ["sh", "-c", "while :; do :; done"], cpu=300)
    time.sleep(1.5)
    stats = agent.stub.GetNodeStats(pb.GetNodeStatsRequest())
    assert stats.node_name == "test-node" and stats.cgroup_version == "v1"
    assert stats.cpu_capacity_millis == (os.cpu_count() or 1) * 1000
    assert 0 < stats.memory_available_bytes <= stats.memory_total_bytes
    assert stats.cpu_pressure.some_total_us > 0
    (busy,) = [p for p in stats.processes if p.ref.name == "busy"]
    assert busy.cpu_seconds > 0.1
    assert 0.1 < busy.cpu_usage_cores < 0.5
    assert busy.memory_current_bytes > 0 and busy.memory_peak_bytes >= busy.memory_current_bytes


def test_environment_values_never_leave_the_agent_but_reach_the_process(
    agent: AgentProcess,
) -> None:
    """Names are shown, values only to the process (and record.json, the agent's own):
    not in replies, the event stream, the retained journal, nor the agent's log."""
    secret = "hunter2-" + "s3cr3t"
    started = agent.run(
        "keeper", ["sh", "-c", 'echo "got $TOKEN"; sleep 300'], env={"TOKEN": secret}
    )
    seen = [
        started,
        agent.get("keeper"),
        *agent.stub.ListProcesses(pb.ListProcessesRequest()).processes,
        *(e.process for e in agent.events(0)),
    ]
    assert all(dict(p.spec.env) == {"TOKEN": ""} for p in seen if p.spec.name == "keeper")
    assert all(secret not in str(p) for p in seen)
    deadline = time.monotonic() + 10
    while f"got {secret}".encode() not in agent.logs("keeper"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert secret.encode() not in (agent.state_dir / "events.jsonl").read_bytes()
    assert secret not in agent.log()
    record = agent.state_dir / "processes" / "default" / "keeper" / "record.json"
    assert secret in record.read_text() and record.stat().st_mode & 0o077 == 0
    # After an agent restart (the journal and records reloaded) nothing changes.
    agent.kill9()
    agent.start()
    assert dict(agent.get("keeper").spec.env) == {"TOKEN": ""}
