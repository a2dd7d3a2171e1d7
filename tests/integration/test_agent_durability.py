"""The agent dies (SIGKILL) or stops; its processes and their history do not."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)

TICKER = "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.1; done"


def test_sigkilled_agent_readopts_running_process(agent: AgentProcess) -> None:
    before = agent.run(
        "survivor",
        ["sh", "-c", TICKER],
        cpu=300,
        memory=32 * 2**20,
        restart=pb.RESTART_POLICY_NEVER,
    )
    time.sleep(0.5)
    agent.kill9()
    time.sleep(0.5)
    assert os.path.exists(f"/proc/{before.pid}"), "the process outlives the agent"
    lines_while_down = Path(before.log_path).read_text().count("tick")

    agent.start()
    after = agent.get("survivor")
    assert after.state == pb.PROCESS_STATE_RUNNING
    assert after.pid == before.pid and after.uid == before.uid and after.restarts == 0
    # still limited
    assert (agent.cgroup_dir("cpu", "survivor") / "cpu.cfs_quota_us").read_text().strip() == "30000"
    assert f"/{agent.cgroup_root}/default/survivor" in Path(f"/proc/{after.pid}/cgroup").read_text()
    # logs continue
    time.sleep(0.5)
    assert agent.logs("survivor").count(b"tick") > lines_while_down
    # exits are still detected, with their cause
    os.kill(after.pid, signal.SIGKILL)
    done = agent.wait_for("survivor", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    assert done.last_termination.reason == "Signaled"
    assert done.last_termination.signal == signal.SIGKILL
    assert not done.last_termination.observed_after_agent_restart


def test_exit_while_agent_down_is_reported_after_restart(agent: AgentProcess) -> None:
    p = agent.run("brief", ["sh", "-c", "sleep 1; exit 7"], restart=pb.RESTART_POLICY_NEVER)
    last_seq = agent.stub.ListProcesses(pb.ListProcessesRequest()).revision
    agent.kill9()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{p.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.start()
    done = agent.get("brief")
    assert done.state == pb.PROCESS_STATE_FAILED
    assert done.last_termination.exit_code == 7
    assert done.last_termination.observed_after_agent_restart
    # and a watcher resuming from where it was sees the exit, with no gap
    events = agent.events(last_seq)
    assert [e.seq for e in events] == list(range(last_seq + 1, last_seq + 1 + len(events)))
    assert [(e.type, e.process.spec.name) for e in events] == [(pb.EVENT_TYPE_EXITED, "brief")]


def test_restart_policy_applies_to_exits_seen_after_restart(agent: AgentProcess) -> None:
    p = agent.run(
        "phoenix", ["sh", "-c", "sleep 0.5; exit 1"], restart=pb.RESTART_POLICY_ON_FAILURE
    )
    agent.kill9()
    time.sleep(1.5)
    assert not os.path.exists(f"/proc/{p.pid}")
    agent.start()
    assert agent.wait_for("phoenix", lambda p: p.restarts >= 1).restarts >= 1


def test_watch_resumes_across_agent_restart_without_missing_events(agent: AgentProcess) -> None:
    agent.run("w1", ["true"])
    agent.wait_for("w1", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    seen = agent.events(0)
    last = seen[-1].seq
    agent.kill9()
    agent.start()
    agent.run("w2", ["true"])
    agent.wait_for("w2", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    resumed = agent.events(last)
    assert resumed[0].seq == last + 1, "numbering continues across the restart"
    assert [(e.type, e.process.spec.name) for e in resumed] == [
        (pb.EVENT_TYPE_STARTED, "w2"),
        (pb.EVENT_TYPE_EXITED, "w2"),
    ]


def test_watch_from_the_future_is_out_of_range(agent: AgentProcess) -> None:
    revision = agent.stub.ListProcesses(pb.ListProcessesRequest()).revision
    stream = agent.stub.WatchProcesses(
        pb.WatchProcessesRequest(since_seq=revision + 100), timeout=5
    )
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stream))
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_stopping_the_agent_leaves_processes_running(agent: AgentProcess) -> None:
    p = agent.run("independent", ["sleep", "300"])
    assert agent.terminate() == 0
    assert os.path.exists(f"/proc/{p.pid}")
    agent.start()
    assert agent.get("independent").pid == p.pid
    stopped = agent.stop("independent", grace=0)
    assert stopped.state == pb.PROCESS_STATE_STOPPED


def test_second_agent_on_same_state_dir_is_refused(agent: AgentProcess, agent_factory) -> None:
    with pytest.raises(RuntimeError, match="another agent is already using the state dir"):
        agent_factory(state_dir=agent.state_dir, cgroup_root=agent.cgroup_root)


def test_host_reboot_is_survived(agent: AgentProcess) -> None:
    """A reboot, simulated: the agent, the shim and the process all die at once and
    the (in-memory) cgroup hierarchy is gone; the state dir survives."""
    p = agent.run("rebooted", ["sleep", "300"], memory=32 * 2**20, restart=pb.RESTART_POLICY_ALWAYS)
    shim_pid = int(Path(f"/proc/{p.pid}/status").read_text().split("PPid:")[1].split()[0])
    agent.kill9()
    os.kill(shim_pid, signal.SIGKILL)
    os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{p.pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    for controller in ("cpu", "cpuacct", "memory", "pids", "freezer"):
        group = agent.cgroup_dir(controller, "rebooted")
        if group.exists():
            group.rmdir()
    agent.start()
    back = agent.wait_for(
        "rebooted", lambda q: q.state == pb.PROCESS_STATE_RUNNING and q.pid != p.pid
    )
    assert back.restarts == 1
    assert back.last_termination.reason == "Unknown"
    assert back.last_termination.observed_after_agent_restart
    limit = (agent.cgroup_dir("memory", "rebooted") / "memory.limit_in_bytes").read_text()
    assert int(limit) == 32 * 2**20, "the cgroup and its limit are recreated"
