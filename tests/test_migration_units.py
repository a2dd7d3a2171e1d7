"""Live migration's plain code, called directly: the operator's rules (mode, refusals,
restart recovery, durations, history) and the agent's checkpoint stream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.errors import InvalidArgument
from serverlessos_agent.transfer import CHUNK, Receiver, Source, chunks
from serverlessos_operator.migration import (
    CriuSupport,
    ProcessFacts,
    Recovery,
    choose_mode,
    format_duration,
    history,
    parse_duration,
    recovery,
    refusal,
)

LAZY = CriuSupport(usable=True, lazy_pages=True)
PLAIN = CriuSupport(usable=True)
BOTH = CriuSupport(usable=True, lazy_pages=True, dirty_tracking=True)
NONE = CriuSupport.from_status({})


# ----- mode ---------------------------------------------------------------


def test_auto_prefers_post_copy_then_pre_copy_then_stop_and_copy() -> None:
    assert choose_mode("Auto", "a", LAZY, "b", LAZY)[0] == "PostCopy"
    dirty = CriuSupport(usable=True, dirty_tracking=True)
    assert choose_mode("Auto", "a", dirty, "b", dirty)[0] == "PreCopy"
    assert choose_mode("Auto", "a", LAZY, "b", PLAIN)[0] == "StopAndCopy"


def test_an_explicit_mode_the_nodes_cannot_do_is_refused_with_the_node_named() -> None:
    mode, why = choose_mode("PostCopy", "a", LAZY, "b", PLAIN)
    assert mode is None and "b lacks it" in why
    mode, why = choose_mode("PreCopy", "a", LAZY, "b", LAZY)
    assert mode is None and "dirty-page tracking" in why and "a lacks it" in why
    assert choose_mode("StopAndCopy", "a", PLAIN, "b", PLAIN)[0] == "StopAndCopy"


def test_nodes_without_criu_cannot_take_part() -> None:
    mode, why = choose_mode("Auto", "a", LAZY, "b", NONE)
    assert mode is None and "node b" in why and "no CRIU" in why


def test_criu_support_is_read_from_the_serverless_node_status() -> None:
    status = {
        "capabilities": {"criu": {"usable": True, "version": "4.2.1", "features": ["lazy-pages"]}}
    }
    assert CriuSupport.from_status(status) == CriuSupport(usable=True, lazy_pages=True)
    broken = {"capabilities": {"criu": {"usable": False, "problem": "criu check failed: x"}}}
    assert CriuSupport.from_status(broken).problem == "criu check failed: x"


# ----- may it start? -------------------------------------------------------


def facts(**kw: object) -> ProcessFacts:
    base: dict[str, object] = {"name": "p", "exists": True, "phase": "Running", "node": "a"}
    return ProcessFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_refusals_say_why() -> None:
    assert refusal(facts(), "m1") is None
    assert "no ServerlessProcess" in (refusal(facts(exists=False), "m1") or "")
    assert "already has an active migration, m0" in (
        refusal(facts(active_migration="m0"), "m1") or ""
    )
    assert refusal(facts(active_migration="m1"), "m1") is None  # its own claim
    assert "policy Never" in (refusal(facts(policy="Never"), "m1") or "")
    assert "not running" in (refusal(facts(phase="Pending", node=None), "m1") or "")
    assert "being deleted" in (refusal(facts(deleting=True), "m1") or "")


# ----- restart recovery ----------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        (None, Recovery.START),
        ("Pending", Recovery.START),
        ("Scheduling", Recovery.START),
        ("Checkpointing", Recovery.ROLL_BACK),
        ("Transferring", Recovery.ROLL_BACK),
        ("Restoring", Recovery.ASK_TARGET),
    ],
)
def test_an_operator_restarted_mid_migration_knows_what_to_do(
    phase: str | None, action: Recovery
) -> None:
    assert recovery(phase) == action


def test_finished_migrations_are_not_recovered() -> None:
    with pytest.raises(ValueError):
        recovery("Succeeded")


# ----- small pieces ---------------------------------------------------------


def test_durations() -> None:
    assert format_duration(0.0874) == "87ms"
    assert format_duration(1.4234) == "1.42s"
    assert format_duration(123) == "2m3s"
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90
    for bad in ("", "5", "5h", "s5", "1s x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_history_keeps_the_last_ten_and_updates_by_name() -> None:
    records: list[dict[str, object]] = []
    for i in range(12):
        records = history(records, {"name": f"m{i}", "phase": "Succeeded"})  # type: ignore[arg-type]
    assert [r["name"] for r in records] == [f"m{i}" for i in range(2, 12)]
    records = history(records, {"name": "m11", "phase": "RolledBack"})  # type: ignore[arg-type]
    assert len(records) == 10 and records[-1] == {"name": "m11", "phase": "RolledBack"}


# ----- the checkpoint stream -------------------------------------------------


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "images/pages-1.img": os.urandom(3 * CHUNK + 17),
        "images/core-1.img": b"core",
        "work/state.txt": b"42",
        "work/sub/deeper.bin": os.urandom(1000),
        "work/empty": b"",
        "logs/output.log": b"1\n2\n3\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "work" / "link").symlink_to("state.txt")
    return files


def sources(root: Path) -> list[Source]:
    return [Source(name, root / name) for name in ("images", "work", "logs")]


def test_a_tree_arrives_whole_and_checked(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    receiver = Receiver(tmp_path / "dst")
    stats: dict[str, int] = {}
    sent = list(chunks(sources(tmp_path / "src"), stats))
    assert max(len(c.data) for c in sent) <= CHUNK, "memory stays bounded by the chunk size"
    for chunk in sent:
        receiver.feed(chunk)
    assert receiver.done is not None and receiver.files == len(files)
    assert receiver.received_bytes == sum(len(d) for d in files.values()) == stats["bytes"]
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    assert os.readlink(tmp_path / "dst" / "work" / "link") == "state.txt"


def test_a_corrupted_chunk_is_caught_by_the_checksum(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    receiver = Receiver(tmp_path / "dst")
    flipped = False
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        for chunk in chunks(sources(tmp_path / "src")):
            if chunk.WhichOneof("part") == "data" and not flipped:
                data = bytearray(chunk.data)
                data[0] ^= 0xFF
                receiver.feed(pb.CheckpointChunk(data=bytes(data)))
                flipped = True
                continue
            receiver.feed(chunk)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "images/../../x", "other/file", ""])
def test_paths_cannot_escape_the_receiving_directory(tmp_path: Path, path: str) -> None:
    receiver = Receiver(tmp_path)
    with pytest.raises(InvalidArgument):
        receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path=path, size=1)))


def test_a_stream_cut_short_or_padded_is_refused(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "a")
    receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/f", size=4)))
    receiver.feed(pb.CheckpointChunk(data=b"ab"))
    with pytest.raises(InvalidArgument, match="2 bytes arrived, 4 announced"):
        receiver.feed(
            pb.CheckpointChunk(file_end=pb.FileEnd(sha256=hashlib.sha256(b"ab").digest()))
        )
    receiver = Receiver(tmp_path / "b")
    with pytest.raises(InvalidArgument, match="announced 3 files"):
        receiver.feed(pb.CheckpointChunk(done=pb.CheckpointDone(files=3)))
