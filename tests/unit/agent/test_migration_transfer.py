"""Live migration's plain code, called directly: the operator's rules (mode, refusals,
restart recovery, durations, history) and the agent's checkpoint stream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.errors import InvalidArgument
from serverlessos_agent.migration.transfer import CHUNK, Receiver, Source, chunks


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
