"""Running processes, called directly without root: validation, back-off, restart
decisions, leases (with a stand-in cgroup driver), how a run ended."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from serverlessos_agent.cgroup import CgroupDriver, CgroupStats, SubtreeUsage
from serverlessos_agent.errors import FailedPrecondition, InvalidArgument
from serverlessos_agent.records import (
    Lease,
    ProcessRecord,
    ProcessSpec,
    Reason,
    Resources,
    RestartPolicy,
    Run,
    State,
    Termination,
)
from serverlessos_agent.runtime.launcher import Launcher
from serverlessos_agent.runtime.limits import (
    Leases,
    Limits,
    ResourceUpdates,
    fallback_after_expiry,
)
from serverlessos_agent.runtime.process_table import ProcessTable
from serverlessos_agent.runtime.restart_policy import Backoff, should_restart
from serverlessos_agent.runtime.spawner import Spawner
from serverlessos_agent.runtime.validation import NodeCapacity, check_spec
from serverlessos_agent.storage.event_journal import EventJournal, EventType
from serverlessos_agent.storage.record_store import RecordStore

CAPACITY = NodeCapacity(cpu_millis=2000, memory_bytes=8 * 2**30)
MI = 2**20


def test_validation_accepts_a_good_spec() -> None:
    check_spec(
        ProcessSpec(name="web-1", argv=("sleep", "1"), resources=Resources(500, 2**30)), CAPACITY
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ProcessSpec(name="a", argv=()), "argv is empty"),
        (ProcessSpec(name="-a", argv=("x",)), "DNS-1123"),
        (ProcessSpec(name="a", argv=("x", "a\0b")), "NUL"),
        (ProcessSpec(name="a", argv=("x",), env={"A=B": "c"}), "environment variable name"),
        (ProcessSpec(name="a", argv=("x",), resources=Resources(cpu_millis=2001)), "capacity"),
        (ProcessSpec(name="a", argv=("x",), namespace=""), "namespace must not be empty"),
    ],
)
def test_validation_messages(spec: ProcessSpec, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_spec(spec, CAPACITY)


def test_backoff_doubles_caps_and_resets_after_a_healthy_run() -> None:
    b = Backoff(base=1, cap=10, reset_after=60)
    step, delays = 0, []
    for _ in range(6):
        delay, step = b.after_exit(step, run_seconds=1)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 10, 10]
    assert b.after_exit(step, run_seconds=61) == (1, 1)


@pytest.mark.parametrize(
    ("policy", "reason", "restart"),
    [
        (RestartPolicy.ALWAYS, Reason.COMPLETED, True),
        (RestartPolicy.ALWAYS, Reason.ERROR, True),
        (RestartPolicy.ON_FAILURE, Reason.COMPLETED, False),
        (RestartPolicy.ON_FAILURE, Reason.OOM_KILLED, True),
        (RestartPolicy.ON_FAILURE, Reason.START_ERROR, True),
        (RestartPolicy.NEVER, Reason.ERROR, False),
    ],
)
def test_restart_decisions(policy: RestartPolicy, reason: Reason, restart: bool) -> None:
    assert should_restart(policy, Termination(reason)) is restart


def test_the_fork_server_imports_only_the_standard_library() -> None:
    """It forks every shim: kept small (see runtime/shim.py), whatever its package imports."""
    code = (
        "import sys, serverlessos_agent.runtime.shim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'google', 'kubernetes', 'prometheus_client', 'serverlessos')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Of the shared package, only its standard-library-only capability table.
    assert out.stdout.strip() == "['serverlessos', 'serverlessos.capabilities']"


# ----- the parts of the runtime that need no root: a stand-in cgroup driver ----------


class FakeCgroups(CgroupDriver):
    """Records what it is told; memory use and OOM kills are set by the test."""

    version = "fake"

    def __init__(self) -> None:
        super().__init__("sos")
        self.limits: dict[str, Resources] = {}
        self.memory_current: int | None = None
        self.oom_kills = 0
        self.refuse_memory = False  # as a kernel that cannot reclaim down to a limit

    def check(self) -> None:
        pass

    def create(self, group: str) -> None:
        pass

    def set_limits(self, group: str, resources: Resources) -> None:
        old = self.limits.get(group)
        if self.refuse_memory and old is not None and resources.memory_bytes != old.memory_bytes:
            raise FailedPrecondition("memory.max: device or resource busy")
        self.limits[group] = resources

    def procs_files(self, group: str) -> list[Path]:
        return []

    def pids(self, group: str) -> list[int]:
        return []

    def kill(self, group: str) -> None:
        pass

    def freeze(self, group: str, frozen: bool) -> bool:
        return False

    def remove(self, group: str) -> None:
        pass

    def stats(self, group: str) -> CgroupStats:
        return CgroupStats(0, 0, self.memory_current, None, self.oom_kills)

    def subtree_usage(self, group: str) -> SubtreeUsage:
        raise FileNotFoundError(group)

    def display_path(self, group: str) -> str:
        return group


def _running(name: str = "p") -> ProcessRecord:
    return ProcessRecord(
        uid="u",
        spec=ProcessSpec(name=name, argv=("sleep", "1"), resources=Resources(2000, 256 * MI)),
        state=State.RUNNING,
        created_at=1.0,
        cgroup=f"sos/default/{name}",
        log_path="/l",
        workdir="/w",
        run=Run(attempt=0, shim_pid=10, shim_start=5, pid=11, pid_start=6, started_at=2.0),
    )


@pytest.mark.parametrize(
    ("fallback", "used", "expected", "message"),
    [
        (
            Resources(cpu_millis=500),
            None,
            Resources(500, 256 * MI),
            "lease expired after 6s without renewal: cpu fallback 500m",
        ),
        (
            Resources(memory_bytes=64 * MI),
            100 * MI,
            Resources(2000, 256 * MI),
            "lease expired after 6s without renewal: memory fallback 64Mi not applied "
            "(the process uses 100Mi), kept at 256Mi",
        ),
        (
            Resources(500, 64 * MI),
            32 * MI,
            Resources(500, 64 * MI),
            "lease expired after 6s without renewal: cpu fallback 500m, memory fallback 64Mi",
        ),
        (
            Resources(),
            None,
            Resources(2000, 256 * MI),
            "lease expired after 6s without renewal: limits kept (the lease had no fallback)",
        ),
    ],
)
def test_what_an_expired_lease_falls_back_to(
    fallback: Resources, used: int | None, expected: Resources, message: str
) -> None:
    lease = Lease(seconds=6, fallback=fallback)
    assert fallback_after_expiry(lease, Resources(2000, 256 * MI), used) == (expected, message)


def _table(tmp_path: Path) -> tuple[ProcessTable, RecordStore, EventJournal]:
    store = RecordStore(tmp_path)
    journal = EventJournal(tmp_path / "events.jsonl")
    return ProcessTable(store, journal), store, journal


def test_a_lease_not_renewed_falls_back_once_saved_and_announced(tmp_path: Path) -> None:
    async def scenario() -> None:
        table, store, journal = _table(tmp_path)
        cgroups = FakeCgroups()
        cgroups.memory_current = 200 * MI
        limits = Limits(cgroups)
        leases = Leases(table, limits)
        updates = ResourceUpdates(table, limits, leases, lambda: CAPACITY)
        record = _running()
        table.add(record)
        store.prepare(record.ref)
        lease = Lease(seconds=0.2, fallback=Resources(500, 128 * MI))
        await updates.update_resources(record.ref, Resources(1500, 256 * MI), lease)
        assert (
            journal.since(0)[-1].message == "leased for 0.2s, then fallback cpu 500m, memory 128Mi"
        )
        first_expiry = record.lease_expires_at
        revision = journal.revision

        await asyncio.sleep(0.1)  # a renewal that changes nothing: no write, no event
        await updates.update_resources(record.ref, Resources(1500, 256 * MI), lease)
        assert journal.revision == revision and record.lease_expires_at > first_expiry

        await asyncio.sleep(0.35)
        assert leases.expiries == 1
        assert record.lease is None and record.lease_expires_at == 0.0
        # 128Mi is below the 200Mi in use: the memory limit is kept, the CPU falls back.
        assert cgroups.limits[record.cgroup] == Resources(500, 256 * MI)
        (event,) = journal.since(revision)
        assert event.type == EventType.RESOURCES_UPDATED
        assert event.message == (
            "lease expired after 0.2s without renewal: cpu fallback 500m, memory fallback "
            "128Mi not applied (the process uses 200Mi), kept at 256Mi"
        )
        assert store.load_all()[0].lease is None, "the expiry is saved"

        await updates.update_resources(record.ref, Resources(1500, 256 * MI))
        assert journal.since(revision + 1)[-1].message == ""  # never leased since the expiry
        journal.close()

    asyncio.run(scenario())


def test_a_fallback_the_kernel_refuses_keeps_memory(tmp_path: Path) -> None:
    async def scenario() -> None:
        table, store, journal = _table(tmp_path)
        cgroups = FakeCgroups()
        leases = Leases(table, Limits(cgroups))
        record = _running()
        record.lease = Lease(seconds=0.05, fallback=Resources(500, 64 * MI))
        cgroups.set_limits(record.cgroup, record.spec.resources)
        cgroups.refuse_memory = True
        store.prepare(record.ref)
        leases.arm(record, table.add(record))
        await asyncio.sleep(0.2)
        assert cgroups.limits[record.cgroup] == Resources(500, 256 * MI)
        assert journal.since(0)[-1].message.endswith(
            "memory fallback 64Mi; memory kept at 256Mi: memory.max: device or resource busy"
        )
        journal.close()

    asyncio.run(scenario())


def test_a_stopped_or_unleased_record_has_no_lease_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        table, _, journal = _table(tmp_path)
        leases = Leases(table, Limits(FakeCgroups()))
        record = _running()
        record.lease = Lease(seconds=0.05)
        live = table.add(record)
        leases.arm(record, live)
        assert live.lease_timer is not None
        table.forget(record)  # stopped: its timer goes with it
        assert live.lease_timer is None
        await asyncio.sleep(0.1)
        assert leases.expiries == 0 and journal.revision == 0
        record.lease = None
        leases.arm(record, live)
        assert live.lease_timer is None and record.lease_expires_at == 0.0
        journal.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("exit_info", "oom_kills", "reason", "message"),
    [
        (None, 0, Reason.UNKNOWN, "the process ended but its exit status was lost"),
        (
            {"attempt": 1, "exit_code": 0, "signal": 0},
            0,
            Reason.UNKNOWN,
            "the process ended but its exit status was lost",
        ),
        ({"attempt": 0, "exit_code": 0, "signal": 0}, 0, Reason.COMPLETED, "exited with code 0"),
        ({"attempt": 0, "exit_code": 3, "signal": 0}, 0, Reason.ERROR, "exited with code 3"),
        (
            {"attempt": 0, "exit_code": 137, "signal": 9},
            0,
            Reason.SIGNALED,
            "killed by signal 9 (SIGKILL)",
        ),
        (
            {"attempt": 0, "exit_code": 137, "signal": 9},
            1,
            Reason.OOM_KILLED,
            "killed by the kernel's OOM killer: the process needed more than its memory "
            "limit of 256Mi",
        ),
    ],
)
def test_how_a_run_ended_is_read_from_the_shims_exit_file(
    tmp_path: Path, exit_info: dict[str, int] | None, oom_kills: int, reason: Reason, message: str
) -> None:
    store = RecordStore(tmp_path)
    cgroups = FakeCgroups()
    cgroups.oom_kills = oom_kills
    launcher = Launcher(cgroups, Spawner(), store)
    record = _running()
    assert record.run is not None
    store.prepare(record.ref)
    if exit_info is not None:
        (store.run_dir(record.ref) / "exit.json").write_text(
            json.dumps({**exit_info, "finished_at": 7.0})
        )
    ended = launcher.termination(record, record.run, observed_after_restart=False)
    assert ended.reason == reason and ended.message.startswith(message)
    assert ended.started_at == 2.0
    later = launcher.termination(record, record.run, observed_after_restart=True)
    assert later.observed_after_agent_restart
    if exit_info is not None and exit_info["attempt"] == 0:
        assert later.message == message + " (while the agent was not running)"
        assert ended.finished_at == 7.0 and ended.exit_code == exit_info["exit_code"]


def test_the_run_a_shim_recorded_is_adopted_only_for_the_current_attempt(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    launcher = Launcher(FakeCgroups(), Spawner(), store)
    record = _running()
    store.prepare(record.ref)
    assert launcher.run_from_shim(record) is None
    shim = {"attempt": 0, "shim_pid": 20, "shim_start": 7, "pid": 21, "pid_start": 8}
    (store.run_dir(record.ref) / "shim.json").write_text(json.dumps({**shim, "started_at": 3.0}))
    run = launcher.run_from_shim(record)
    assert run == Run(attempt=0, shim_pid=20, shim_start=7, pid=21, pid_start=8, started_at=3.0)
    record.attempt = 1
    assert launcher.run_from_shim(record) is None, "an older attempt's shim is not this run"


def test_a_log_is_complete_once_its_record_ended_for_good_or_went(tmp_path: Path) -> None:
    async def scenario() -> None:
        table, _, journal = _table(tmp_path)
        record = _running()
        table.add(record)
        assert not table.finished(record)
        record.state = State.BACKOFF  # it will run again
        assert not table.finished(record)
        record.state = State.SUCCEEDED
        assert table.finished(record)
        record.state = State.RUNNING
        table.forget(record)
        assert table.finished(record)
        table.add(_running())  # a new process of the same name is another log's
        assert table.finished(record)
        journal.close()

    asyncio.run(scenario())
