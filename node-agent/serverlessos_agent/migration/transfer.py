"""Moving a checkpoint between agents: a directory tree as a stream of chunks.

The source reads files in fixed-size chunks (memory stays bounded whatever the
checkpoint's size; gRPC's flow control bounds what is in flight), and every
file ends with its SHA-256, which the receiver checks before it accepts the
file. Paths are relative and confined to the receiving directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..errors import InvalidArgument

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to bound memory
ROOTS = ("images", "work", "logs")


@dataclass(frozen=True)
class Source:
    """A directory to send, under a name (one of ROOTS) the receiver maps to a place."""

    name: str
    path: Path


def chunks(
    sources: list[Source], stats: dict[str, int] | None = None
) -> Iterator[pb.CheckpointChunk]:
    """FileStart, data, FileEnd for every file under the sources (depth first), then Done.
    `stats` (if given) receives files and bytes as they are sent."""
    files = total = 0
    for source in sources:
        if not source.path.exists():
            continue
        for path in _walk(source.path):
            rel = str(PurePosixPath(source.name) / path.relative_to(source.path))
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                yield pb.CheckpointChunk(
                    file_start=pb.FileStart(path=rel, mode=st.st_mode & 0o7777, directory=True)
                )
                continue
            if stat.S_ISLNK(st.st_mode):
                yield pb.CheckpointChunk(
                    file_start=pb.FileStart(path=rel, symlink_target=os.readlink(path))
                )
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, fifos: CRIU recreates what it needs
            yield pb.CheckpointChunk(
                file_start=pb.FileStart(path=rel, mode=st.st_mode & 0o7777, size=st.st_size)
            )
            digest = hashlib.sha256()
            with open(path, "rb", buffering=0) as f:
                while block := f.read(CHUNK):
                    digest.update(block)
                    total += len(block)
                    if stats is not None:
                        stats["bytes"] = total
                    yield pb.CheckpointChunk(data=block)
            files += 1
            yield pb.CheckpointChunk(file_end=pb.FileEnd(sha256=digest.digest()))
    if stats is not None:
        stats["files"] = files
    yield pb.CheckpointChunk(done=pb.CheckpointDone(files=files, bytes=total))


def _walk(root: Path) -> Iterator[Path]:
    """Every entry under root, parents before children (so directories exist first)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        if base != root:
            yield base
        for name in sorted(filenames):
            yield base / name
        # os.walk does not descend into symlinked directories; list them as links.
        for name in list(dirnames):
            if (base / name).is_symlink():
                dirnames.remove(name)
                yield base / name


@dataclass
class Receiver:
    """Writes an incoming stream under `dest`/<root>/..., checking every file's digest."""

    dest: Path
    received_bytes: int = 0
    files: int = 0
    _file: int | None = None
    _path: Path | None = None
    _digest: hashlib._Hash | None = None
    _expected: int = 0
    _written: int = 0
    done: pb.CheckpointDone | None = None
    _seen: set[str] = field(default_factory=set)

    def place(self, rel: str) -> Path:
        """The local path for a relative one, refusing anything that would escape dest."""
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] not in ROOTS:
            raise InvalidArgument(f"refusing checkpoint path {rel!r}")
        return self.dest.joinpath(*pure.parts)

    def feed(self, chunk: pb.CheckpointChunk) -> None:
        part = chunk.WhichOneof("part")
        if self.done is not None:
            raise InvalidArgument("data after the end of the checkpoint")
        if part == "file_start":
            self._start(chunk.file_start)
        elif part == "data":
            if self._file is None:
                raise InvalidArgument("checkpoint data outside a file")
            assert self._digest is not None
            self._digest.update(chunk.data)
            view = memoryview(chunk.data)
            while view:
                written = os.write(self._file, view)
                view = view[written:]
            self._written += len(chunk.data)
            self.received_bytes += len(chunk.data)
        elif part == "file_end":
            self._end(chunk.file_end)
        elif part == "done":
            if self._file is not None:
                raise InvalidArgument("the checkpoint ended inside a file")
            if chunk.done.files != self.files:
                raise InvalidArgument(
                    f"the checkpoint announced {chunk.done.files} files, {self.files} arrived"
                )
            self.done = chunk.done
        else:
            raise InvalidArgument(f"unexpected checkpoint chunk {part!r}")

    def _start(self, start: pb.FileStart) -> None:
        if self._file is not None:
            raise InvalidArgument(f"{start.path}: a file started inside another")
        path = self.place(start.path)
        if start.path in self._seen:
            raise InvalidArgument(f"{start.path} sent twice")
        self._seen.add(start.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if start.directory:
            path.mkdir(exist_ok=True)
            os.chmod(path, start.mode or 0o755)
            return
        if start.symlink_target:
            path.symlink_to(start.symlink_target)
            return
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._path, self._digest = path, hashlib.sha256()
        self._expected, self._written = start.size, 0
        os.fchmod(self._file, start.mode or 0o644)

    def _end(self, end: pb.FileEnd) -> None:
        if self._file is None or self._path is None or self._digest is None:
            raise InvalidArgument("a file ended that never started")
        os.close(self._file)
        self._file = None
        if self._written != self._expected:
            raise InvalidArgument(
                f"{self._path.name}: {self._written} bytes arrived, {self._expected} announced"
            )
        if self._digest.digest() != end.sha256:
            raise InvalidArgument(f"{self._path.name}: checksum mismatch (corrupted in transit)")
        self.files += 1

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
