"""Pure domain code, called directly: quantities, validation, back-off, PSI, logs, events, store."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path

import pytest
from serverlessos_agent.errors import InvalidArgument, OutOfRange
from serverlessos_agent.events import EventLog, EventType
from serverlessos_agent.logs import rotate_if_needed, tail
from serverlessos_agent.model import (
    ProcessRecord,
    ProcessSpec,
    Reason,
    Resources,
    RestartPolicy,
    Run,
    State,
    Termination,
)
from serverlessos_agent.quantity import (
    QuantityError,
    format_bytes,
    format_cpu,
    parse,
    parse_bytes,
    parse_cpu_millis,
)
from serverlessos_agent.restart import Backoff, should_restart
from serverlessos_agent.stats import cpu_times, parse_meminfo, parse_pressure
from serverlessos_agent.store import RecordStore
from serverlessos_agent.validation import NodeCapacity, check_spec


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("2", 2000),
        ("0.1", 100),
        ("1.5", 1500),
        ("100m", 100),
        ("1e-1", 100),
        ("0", 0),
        (".5", 500),
    ],
)
def test_cpu_quantities(text: str, millis: int) -> None:
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("128974848", 128974848),
        ("129e6", 129 * 10**6),
        ("123Mi", 123 * 2**20),
        ("1.5Gi", 3 * 2**29),
        ("64Ki", 65536),
    ],
)
def test_memory_quantities(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2.3", "5 Mi", "Mi", "1mi", "--1"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse(text)


def test_fractional_units_are_refused() -> None:
    with pytest.raises(QuantityError, match="finer than 1m"):
        parse_cpu_millis("0.0001")
    with pytest.raises(QuantityError, match="whole number of bytes"):
        parse_bytes("100m")
    assert parse("-1") == Fraction(-1)


def test_formatting_round_trips() -> None:
    assert [format_cpu(m) for m in (500, 2000, 1500)] == ["500m", "2", "1500m"]
    assert [format_bytes(b) for b in (2**30, 256 * 2**20, 1000)] == ["1Gi", "256Mi", "1000"]
    for text in ("250m", "3", "64Mi", "2Gi"):
        parsed = parse_cpu_millis(text) if text[-1] in "m0123456789" else parse_bytes(text)
        formatted = format_cpu(parsed) if text[-1] in "m0123456789" else format_bytes(parsed)
        assert formatted == text


CAPACITY = NodeCapacity(cpu_millis=2000, memory_bytes=8 * 2**30)


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


def test_psi_and_meminfo_parsing() -> None:
    p = parse_pressure(
        "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n"
        "full avg10=0.20 avg60=0.05 avg300=0.00 total=789\n"
    )
    assert (p.some_avg10, p.some_avg60, p.full_avg10, p.full_avg60) == (1.5, 0.75, 0.2, 0.05)
    assert (p.some_total_us, p.full_total_us) == (123456, 789)
    cpu_only = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    assert cpu_only.full_total_us == 0
    info = parse_meminfo("MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Total: 0\n")
    assert info == {"MemTotal": 16384 * 1024, "MemAvailable": 8192 * 1024, "HugePages_Total": 0}
    busy, total = cpu_times()
    assert 0 <= busy <= total


def test_log_rotation_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"".join(b"line%d\n" % i for i in range(100)))
    assert not rotate_if_needed(log, max_bytes=10_000, keep=1)
    assert rotate_if_needed(log, max_bytes=100, keep=1)
    assert log.stat().st_size == 0 and (tmp_path / "output.log.1").exists()
    with open(log, "ab") as f:  # the process keeps appending (O_APPEND)
        f.write(b"after\n")
    data, size = tail(log, 3, keep=1)
    assert data == b"line98\nline99\nafter\n" and size == 6
    everything, _ = tail(log, 0, keep=1)
    assert everything.count(b"\n") == 101


def _record(name: str = "p") -> ProcessRecord:
    return ProcessRecord(
        uid="u1",
        spec=ProcessSpec(
            name=name,
            argv=("sleep", "1"),
            env={"A": "b"},
            resources=Resources(100, 2**26),
            restart_policy=RestartPolicy.ON_FAILURE,
        ),
        state=State.RUNNING,
        created_at=1.0,
        cgroup="r/default/p",
        log_path="/l",
        workdir="/w",
        run=Run(attempt=0, shim_pid=10, shim_start=5, pid=11, pid_start=6, started_at=2.0),
        last_termination=Termination(Reason.OOM_KILLED, 137, 9, "oom", 1.0, 2.0),
    )


def test_record_store_round_trip_and_corrupt_files(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    record = _record()
    store.prepare(record.ref)
    store.save(record)
    assert store.load_all() == [record]
    bad = tmp_path / "processes" / "default" / "broken"
    bad.mkdir()
    (bad / "record.json").write_text("{not json")
    assert store.load_all() == [record], "a torn or corrupt record is skipped, not fatal"
    store.delete(record.ref)
    assert store.load_all() == []


def test_event_log_numbers_persists_and_bounds(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "events.jsonl"
        log = EventLog(path, retain=5)
        for _ in range(12):
            log.append(EventType.STARTED, _record().to_json())
        assert log.revision == 12
        assert [e.seq for e in log.since(9)] == [10, 11, 12]
        with pytest.raises(OutOfRange, match="no longer retained"):
            log.since(3)
        with pytest.raises(OutOfRange, match="ahead"):
            log.since(13)
        log.close()
        with open(path, "a") as f:
            f.write('{"seq": 13, "tru')  # a torn line from a crash
        reopened = EventLog(path, retain=5)
        assert reopened.revision == 12
        assert reopened.append(EventType.EXITED, _record().to_json()).seq == 13
        assert len(path.read_text().splitlines()) <= 2 * 5 + 1
        got = []

        async def consume() -> None:
            async for event in reopened.watch(12):
                got.append(event.seq)
                if len(got) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        reopened.append(EventType.STOPPED, _record().to_json())
        await asyncio.wait_for(task, 2)
        assert got == [13, 14]
        reopened.close()

    asyncio.run(scenario())


def test_event_log_file_is_json_lines(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = EventLog(tmp_path / "e.jsonl")
        log.append(EventType.OOM_KILLED, _record().to_json(), "boom")
        log.close()

    asyncio.run(scenario())
    (line,) = (tmp_path / "e.jsonl").read_text().splitlines()
    assert json.loads(line)["type"] == "OOMKilled"
