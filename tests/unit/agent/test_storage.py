"""What the agent keeps on disk, called directly: logs, the record store, the event journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from serverlessos_agent.errors import OutOfRange
from serverlessos_agent.records import (
    ProcessRecord,
    ProcessSpec,
    Reason,
    Resources,
    RestartPolicy,
    Run,
    State,
    Termination,
)
from serverlessos_agent.storage import log_files
from serverlessos_agent.storage.event_journal import EventJournal, EventType
from serverlessos_agent.storage.log_files import read_spans, rotate_if_needed, tail
from serverlessos_agent.storage.record_store import RecordStore


def test_log_rotation_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"".join(b"line%d\n" % i for i in range(100)))
    assert not rotate_if_needed(log, max_bytes=10_000, keep=1)
    assert rotate_if_needed(log, max_bytes=100, keep=1)
    assert log.stat().st_size == 0 and (tmp_path / "output.log.1").exists()
    with open(log, "ab") as f:  # the process keeps appending (O_APPEND)
        f.write(b"after\n")
    spans, size = tail(log, 3, keep=1)
    assert b"".join(read_spans(spans)) == b"line98\nline99\nafter\n" and size == 6
    everything, _ = tail(log, 0, keep=1)
    assert b"".join(read_spans(everything)).count(b"\n") == 101


@pytest.mark.parametrize("lines", [0, 1, 2, 5, 17, 500])
@pytest.mark.parametrize("trailing", [True, False])
def test_tail_reads_back_in_bounded_blocks_as_splitlines_would(
    tmp_path: Path, lines: int, trailing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across rotated files and block edges (tiny blocks here), the same lines as
    splitting the whole text; the pieces sent never exceed one block."""
    monkeypatch.setattr(log_files, "READ_CHUNK", 7)
    log = tmp_path / "output.log"
    older = b"".join(b"old %d\n" % i for i in range(10))
    newer = b"".join(b"new line %d\n" % i for i in range(8)) + (b"" if trailing else b"tail")
    log.with_name("output.log.1").write_bytes(older)
    log.write_bytes(newer)
    spans, size = tail(log, lines, keep=1)
    pieces = list(read_spans(spans))
    whole = (older + newer).splitlines(keepends=True)
    assert b"".join(pieces) == b"".join(whole[-lines:] if lines else whole)
    assert size == len(newer) and all(len(p) <= 7 for p in pieces)


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
        log = EventJournal(path, retain=5)
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
        reopened = EventJournal(path, retain=5)
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
        log = EventJournal(tmp_path / "e.jsonl")
        log.append(EventType.OOM_KILLED, _record().to_json(), "boom")
        log.close()

    asyncio.run(scenario())
    (line,) = (tmp_path / "e.jsonl").read_text().splitlines()
    assert json.loads(line)["type"] == "OOMKilled"


def test_a_journal_from_before_values_were_kept_out_is_rewritten_without_them(
    tmp_path: Path,
) -> None:
    """_record() has env A=b; an older agent journalled such records whole."""

    async def older_agent() -> None:
        journal = EventJournal(tmp_path / "e.jsonl")
        journal.append(EventType.STARTED, _record().to_json(), "")
        journal.close()

    asyncio.run(older_agent())
    assert '"A":"b"' in (tmp_path / "e.jsonl").read_text()

    async def this_agent() -> list[dict[str, object]]:
        journal = EventJournal(tmp_path / "e.jsonl")
        events = journal.since(0)
        journal.close()
        return [e.record for e in events]

    (record,) = asyncio.run(this_agent())
    assert record["spec"]["env"] == {"A": ""}  # type: ignore[index]
    assert '"A":"b"' not in (tmp_path / "e.jsonl").read_text()
    assert _record().redacted().spec.env == {"A": ""} and _record().spec.env == {"A": "b"}
