"""Live migration's plain code, called directly: the operator's rules (mode, refusals,
restart recovery, durations, history) and the agent's checkpoint stream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.errors import InvalidArgument
from serverlessos_agent.migration.transfer import CHUNK, ReceiveLimits, Receiver, Source, chunks


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


def _feed_file(receiver: Receiver, path: str, data: bytes) -> None:
    receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path=path, size=len(data))))
    receiver.feed(pb.CheckpointChunk(data=data))
    receiver.feed(pb.CheckpointChunk(file_end=pb.FileEnd(sha256=hashlib.sha256(data).digest())))


@pytest.mark.parametrize("through", ["work/link/evil", "work/link/sub/evil"])
def test_a_symlink_sent_by_the_peer_is_never_followed(tmp_path: Path, through: str) -> None:
    """A hostile peer sends a link to a place outside, then files "inside" the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    receiver = Receiver(tmp_path / "dst")
    receiver.feed(
        pb.CheckpointChunk(file_start=pb.FileStart(path="work/link", symlink_target=str(outside)))
    )
    with pytest.raises(InvalidArgument, match="symlink"):
        _feed_file(receiver, through, b"owned")
    assert list(outside.iterdir()) == [], "nothing was written outside the checkpoint"


@pytest.mark.parametrize(
    "path",
    ["work", "images", "work/./x", "work//x", "work/x/", "work/a\0b", "work/" + "n" * 256],
)
def test_only_plain_names_beneath_a_root_are_taken(tmp_path: Path, path: str) -> None:
    receiver = Receiver(tmp_path)
    with pytest.raises(InvalidArgument, match="refusing checkpoint path"):
        receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path=path, size=1)))


def test_symlinks_are_leaves_only_and_never_in_images(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "dst")
    with pytest.raises(InvalidArgument, match="images hold none"):
        receiver.feed(
            pb.CheckpointChunk(file_start=pb.FileStart(path="images/x", symlink_target="/etc"))
        )
    # A link as a directory later on (the peer sends the link, then the "directory").
    receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/d", symlink_target="/")))
    with pytest.raises(InvalidArgument, match="symlink"):
        receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/d/x", directory=True)))
    # A file where a directory is claimed.
    _feed_file(receiver, "work/f", b"1")
    with pytest.raises(InvalidArgument, match="not a directory"):
        _feed_file(receiver, "work/f/g", b"2")


def test_sizes_and_counts_are_capped_as_they_arrive(tmp_path: Path) -> None:
    limits = ReceiveLimits(max_bytes=10, max_entries=3)
    receiver = Receiver(tmp_path / "a", limits)
    with pytest.raises(InvalidArgument, match="past the checkpoint cap"):
        receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/big", size=11)))
    receiver = Receiver(tmp_path / "b", limits)
    receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/f", size=2)))
    with pytest.raises(InvalidArgument, match="more bytes than the 2 announced"):
        receiver.feed(pb.CheckpointChunk(data=b"abc"))
    receiver = Receiver(tmp_path / "c", limits)
    for i in range(3):
        _feed_file(receiver, f"work/{i}", b"")
    with pytest.raises(InvalidArgument, match="more than 3 entries"):
        _feed_file(receiver, "work/3", b"")


def test_setuid_and_setgid_bits_are_dropped(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    receiver.feed(pb.CheckpointChunk(file_start=pb.FileStart(path="work/s", mode=0o6755, size=0)))
    receiver.feed(pb.CheckpointChunk(file_end=pb.FileEnd(sha256=hashlib.sha256(b"").digest())))
    assert (tmp_path / "work" / "s").stat().st_mode & 0o7777 == 0o755
