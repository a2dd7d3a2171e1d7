"""Limits measured from the kernel's own accounting, not from the agent's word."""

from __future__ import annotations

import time

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)


def test_cpu_limit_200m_gives_a_fifth_of_a_core(agent: AgentProcess) -> None:
    agent.run("spinner", ["sh", "-c", "while :; do :; done"], cpu=200)
    usage = agent.cgroup_dir("cpuacct", "spinner") / "cpuacct.usage"
    time.sleep(0.5)  # past start-up
    t0, u0 = time.monotonic(), int(usage.read_text())
    time.sleep(5.0)
    t1, u1 = time.monotonic(), int(usage.read_text())
    cores = (u1 - u0) / 1e9 / (t1 - t0)
    assert 0.15 <= cores <= 0.25, f"{cores:.3f} cores used under a 200m limit"
    throttled = (agent.cgroup_dir("cpu", "spinner") / "cpu.stat").read_text()
    assert int(dict(line.split() for line in throttled.splitlines())["nr_throttled"]) > 0


def test_memory_limit_oom_kill_is_reported_as_oomkilled(agent: AgentProcess) -> None:
    p = agent.run(
        "glutton",
        ["python3", "-c", "chunks = [bytearray(8 * 2**20) for _ in range(64)]"],
        memory=64 * 2**20,
    )
    assert p.state == pb.PROCESS_STATE_RUNNING
    done = agent.wait_for("glutton", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    term = done.last_termination
    assert term.reason == "OOMKilled", term
    assert term.signal == 9
    assert "64Mi" in term.message
    oom = (agent.cgroup_dir("memory", "glutton") / "memory.oom_control").read_text()
    assert "oom_kill 1" in oom


def test_oom_event_is_distinct_from_plain_exit(agent: AgentProcess) -> None:
    agent.run("oom", ["python3", "-c", "x = bytearray(200 * 2**20)"], memory=32 * 2**20)
    agent.run("plain", ["sh", "-c", "exit 9"])
    agent.wait_for("oom", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    agent.wait_for("plain", lambda p: p.state == pb.PROCESS_STATE_FAILED)
    revision = agent.stub.ListProcesses(pb.ListProcessesRequest()).revision
    kinds: dict[str, int] = {}
    stream = agent.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=0), timeout=10)
    for event in stream:
        if event.type in (pb.EVENT_TYPE_EXITED, pb.EVENT_TYPE_OOM_KILLED):
            kinds[event.process.spec.name] = event.type
        if event.seq >= revision:
            stream.cancel()
            break
    assert kinds == {"oom": pb.EVENT_TYPE_OOM_KILLED, "plain": pb.EVENT_TYPE_EXITED}
