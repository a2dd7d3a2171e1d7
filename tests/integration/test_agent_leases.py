"""Leased CPU shares (UpdateResources with a lease): renewed quietly, fall back when
not renewed, survive an agent restart. Checked in the kernel's cgroup files."""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)

SLEEPER = ["sleep", "300"]


def _update(
    agent: AgentProcess,
    name: str,
    cpu: int,
    memory: int = 0,
    *,
    lease: float | None = None,
    fallback_cpu: int = 0,
    fallback_memory: int = 0,
) -> pb.Process:
    req = pb.UpdateResourcesRequest(
        ref=pb.ProcessRef(namespace="default", name=name),
        resources=pb.Resources(cpu_millis=cpu, memory_bytes=memory),
    )
    if lease is not None:
        req.lease.CopyFrom(
            pb.Lease(
                seconds=lease,
                fallback=pb.Resources(cpu_millis=fallback_cpu, memory_bytes=fallback_memory),
            )
        )
    return agent.stub.UpdateResources(req, timeout=10)


def _quota(agent: AgentProcess, name: str) -> int:
    return int((agent.cgroup_dir("cpu", name) / "cpu.cfs_quota_us").read_text())


def _revision(agent: AgentProcess) -> int:
    return agent.stub.ListProcesses(pb.ListProcessesRequest(), timeout=10).revision


def _wait_quota(agent: AgentProcess, name: str, quota: int, timeout: float = 10.0) -> float:
    """Seconds until the cgroup's quota became `quota`."""
    start = time.monotonic()
    while _quota(agent, name) != quota:
        assert time.monotonic() - start < timeout, f"quota still {_quota(agent, name)}"
        time.sleep(0.02)
    return time.monotonic() - start


def _record_file(agent: AgentProcess, name: str) -> Path:
    return agent.state_dir / "processes" / "default" / name / "record.json"


def test_lease_applies_renewals_are_silent_and_expiry_falls_back(agent: AgentProcess) -> None:
    agent.run("worker", SLEEPER, cpu=200)
    before = _revision(agent)
    granted = _update(agent, "worker", 800, lease=1.5, fallback_cpu=300)
    assert _quota(agent, "worker") == 80_000
    assert granted.lease.seconds == 1.5 and granted.lease.fallback.cpu_millis == 300
    expires = granted.lease_expires_at.ToNanoseconds() / 1e9
    assert 1.0 < expires - time.time() <= 1.5
    [grant] = agent.events(before)
    assert grant.type == pb.EVENT_TYPE_RESOURCES_UPDATED
    assert grant.message == "leased for 1.5s, then fallback cpu 300m"

    # Renewals for twice the lease: the share holds, nothing is written or announced.
    after_grant = _revision(agent)
    written = _record_file(agent, "worker").stat().st_mtime_ns
    for _ in range(6):
        time.sleep(0.5)
        renewed = _update(agent, "worker", 800, lease=1.5, fallback_cpu=300)
        assert _quota(agent, "worker") == 80_000
    assert renewed.lease_expires_at.ToNanoseconds() / 1e9 > expires + 2
    assert _revision(agent) == after_grant, "a renewal must not emit events"
    assert _record_file(agent, "worker").stat().st_mtime_ns == written, "nor save the record"

    # A changed share under the same lease is written and announced.
    _update(agent, "worker", 700, lease=1.5, fallback_cpu=300)
    assert _quota(agent, "worker") == 70_000
    assert [e.type for e in agent.events(after_grant)] == [pb.EVENT_TYPE_RESOURCES_UPDATED]

    # No more renewals: the fallback applies about a lease later.
    last = _revision(agent)
    waited = _wait_quota(agent, "worker", 30_000)
    assert 1.0 < waited < 3.0, waited
    [expired] = agent.events(last)
    assert expired.type == pb.EVENT_TYPE_RESOURCES_UPDATED
    assert expired.message == "lease expired after 1.5s without renewal: cpu fallback 300m"
    assert not expired.process.HasField("lease")
    now = agent.get("worker")
    assert now.spec.resources.cpu_millis == 300 and not now.HasField("lease")
    assert "lease expired" in agent.log()
    with urllib.request.urlopen(f"http://{agent.metrics}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "serverlessos_agent_lease_expiries_total 1.0" in text


def test_plain_update_cancels_the_lease_and_stop_cancels_its_timer(agent: AgentProcess) -> None:
    agent.run("steady", SLEEPER, cpu=200)
    _update(agent, "steady", 800, lease=1.0, fallback_cpu=300)
    before = _revision(agent)
    plain = _update(agent, "steady", 600)
    assert not plain.HasField("lease") and not plain.HasField("lease_expires_at")
    [event] = agent.events(before)
    assert event.message == "no longer leased"
    time.sleep(1.6)
    assert _quota(agent, "steady") == 60_000, "permanent again"
    assert _revision(agent) == before + 1

    agent.run("brief", SLEEPER, cpu=200)
    _update(agent, "brief", 800, lease=1.0, fallback_cpu=300)
    agent.stop("brief")
    stopped = _revision(agent)
    time.sleep(1.6)
    assert _revision(agent) == stopped
    assert "lease expired" not in agent.log()


@pytest.mark.parametrize(
    ("seconds", "fallback_cpu", "detail"),
    [
        (0.0, 300, "lease of 0s is out of range"),
        (-1.0, 300, "lease of -1s is out of range"),
        (3601.0, 300, "at most 3600 seconds"),
        (math.nan, 300, "out of range"),
        (2.0, 5, "lease fallback: cpu limit 5m is below 10m"),
        (2.0, 10**9, "lease fallback: cpu limit 1M exceeds"),  # canonical, as Kubernetes prints it
    ],
)
def test_invalid_leases_are_refused(
    agent: AgentProcess, seconds: float, fallback_cpu: int, detail: str
) -> None:
    agent.run("steady", SLEEPER, cpu=200)
    with pytest.raises(grpc.RpcError) as err:
        _update(agent, "steady", 800, lease=seconds, fallback_cpu=fallback_cpu)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in err.value.details()
    assert _quota(agent, "steady") == 20_000
    assert not agent.get("steady").HasField("lease")


def test_lease_survives_an_agent_restart_and_still_expires(agent: AgentProcess) -> None:
    agent.run("durable", SLEEPER, cpu=200)
    _update(agent, "durable", 800, lease=1.5, fallback_cpu=300)
    agent.kill9()
    time.sleep(2.0)  # past the lease while the agent is down: its clock restarts
    assert _quota(agent, "durable") == 80_000
    agent.start()
    restarted = time.time()
    held = agent.get("durable")
    assert held.lease.seconds == 1.5 and held.lease.fallback.cpu_millis == 300
    assert held.lease_expires_at.ToNanoseconds() / 1e9 > restarted
    assert _quota(agent, "durable") == 80_000
    before = _revision(agent)
    _wait_quota(agent, "durable", 30_000)
    [expired] = agent.events(before)
    assert expired.message == "lease expired after 1.5s without renewal: cpu fallback 300m"
    assert not agent.get("durable").HasField("lease")


def test_memory_fallback_below_use_keeps_memory(agent: AgentProcess) -> None:
    hog = "x = bytearray(48 * 2**20); import time; time.sleep(300)"
    agent.run("holder", ["python3", "-c", hog], cpu=200, memory=128 * 2**20)
    memory = agent.cgroup_dir("memory", "holder")
    deadline = time.monotonic() + 10
    while int((memory / "memory.usage_in_bytes").read_text()) < 48 * 2**20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = _revision(agent)
    _update(
        agent, "holder", 800, 128 * 2**20, lease=1.0, fallback_cpu=300, fallback_memory=16 * 2**20
    )
    _wait_quota(agent, "holder", 30_000)
    assert int((memory / "memory.limit_in_bytes").read_text()) == 128 * 2**20
    expired = agent.events(before)[-1]
    assert expired.message.startswith(
        "lease expired after 1s without renewal: cpu fallback 300m, "
        "memory fallback 16Mi not applied (the process uses "
    ), expired.message
    assert expired.message.endswith("kept at 128Mi")
    assert agent.get("holder").state == pb.PROCESS_STATE_RUNNING


def test_a_process_started_under_a_lease_falls_back_unless_renewed(agent: AgentProcess) -> None:
    """StartProcess with a lease: a budget's member is never without one, even if the
    operator is gone before its first renewal."""
    spec = pb.ProcessSpec(
        name="member",
        owner=pb.Owner(namespace="default", uid="uid-member"),
        argv=SLEEPER,
        resources=pb.Resources(cpu_millis=900),
        restart_policy=pb.RESTART_POLICY_NEVER,
    )
    started = agent.stub.StartProcess(
        pb.StartProcessRequest(
            spec=spec, lease=pb.Lease(seconds=1.0, fallback=pb.Resources(cpu_millis=400))
        ),
        timeout=20,
    )
    assert started.lease.seconds == 1.0 and started.lease.fallback.cpu_millis == 400
    assert _quota(agent, "member") == 90_000
    waited = _wait_quota(agent, "member", 40_000, timeout=5)
    assert waited <= 2.5
