"""Moving a checkpoint between agents: a directory tree as a stream of chunks.

The source reads files in fixed-size chunks (memory stays bounded whatever the
checkpoint's size; gRPC's flow control bounds what is in flight), and every
file ends with its SHA-256, which the receiver checks before it accepts the
file. Paths are relative and confined to the receiving directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ReceiveLimits:
    """What one checkpoint may hold; anything past it is refused as it arrives."""

    max_bytes: int = 64 << 30  # file contents in total (--max-checkpoint-size)
    max_entries: int = 100_000  # files, directories and links
    max_path: int = 4096  # bytes of a relative path, as PATH_MAX
    max_name: int = 255  # bytes of one path component, as NAME_MAX


_NAME_LIMITS = ReceiveLimits()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Receiver:
    """Writes an incoming stream under `dest`/<root>/..., checking every file's digest.

    Nothing a peer sends is followed: every path is resolved one component at a
    time from a descriptor of `dest` with O_NOFOLLOW (the effect of openat2's
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a symlink the peer created earlier
    cannot lead a later entry outside; symlinks are created only as leaves, never
    in images/ (CRIU's images hold none), and never as one of the roots. Modes lose
    their setuid and setgid bits. Sizes, entry counts and path lengths are capped.
    """

    def __init__(self, dest: Path, limits: ReceiveLimits = _NAME_LIMITS) -> None:
        self.dest = dest
        self.limits = limits
        dest.mkdir(parents=True, exist_ok=True)
        self._root = os.open(dest, _DIR_FLAGS)
        self.received_bytes = 0
        self.files = 0
        self.done: pb.CheckpointDone | None = None
        self._entries = 0
        self._seen: set[str] = set()
        self._file: int | None = None
        self._name = ""
        self._digest: hashlib._Hash | None = None
        self._expected = 0
        self._written = 0

    def parts(self, rel: str) -> tuple[str, ...]:
        """The components of a relative path, refusing anything that is not a plain
        name beneath one of the roots."""
        pure = PurePosixPath(rel)
        parts = pure.parts
        refused = (
            not rel
            or pure.is_absolute()
            or len(parts) < 2  # an entry beneath a root, never a root itself
            or parts[0] not in ROOTS
            or any(p in (".", "..") or "\0" in p for p in parts)
            or len(rel.encode()) > self.limits.max_path
            or any(len(p.encode()) > self.limits.max_name for p in parts)
            or str(pure) != rel  # no "a//b", "a/./b" or trailing slashes to normalise away
        )
        if refused:
            raise InvalidArgument(f"refusing checkpoint path {rel!r}")
        return parts

    def feed(self, chunk: pb.CheckpointChunk) -> None:
        part = chunk.WhichOneof("part")
        if self.done is not None:
            raise InvalidArgument("data after the end of the checkpoint")
        if part == "file_start":
            self._start(chunk.file_start)
        elif part == "data":
            self._data(chunk.data)
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
        parts = self.parts(start.path)
        if start.path in self._seen:
            raise InvalidArgument(f"{start.path} sent twice")
        self._seen.add(start.path)
        self._entries += 1
        if self._entries > self.limits.max_entries:
            raise InvalidArgument(f"the checkpoint has more than {self.limits.max_entries} entries")
        if start.size > self.limits.max_bytes - self.received_bytes:
            raise InvalidArgument(f"{start.path}: {start.size} bytes is past the checkpoint cap")
        mode = (start.mode & 0o1777) or (0o755 if start.directory else 0o644)
        parent = self._parent(parts)
        name = parts[-1]
        try:
            if start.directory:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                fd = self._open_dir(parent, name, start.path)
                try:
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                return
            if start.symlink_target:
                if parts[0] == "images":
                    raise InvalidArgument(f"refusing symlink {start.path!r}: images hold none")
                if "\0" in start.symlink_target or len(start.symlink_target) > 4096:
                    raise InvalidArgument(f"refusing symlink target of {start.path!r}")
                os.symlink(start.symlink_target, name, dir_fd=parent)
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._file = os.open(name, flags, 0o600, dir_fd=parent)
            os.fchmod(self._file, mode)
            self._name, self._digest = start.path, hashlib.sha256()
            self._expected, self._written = start.size, 0
        except FileExistsError:
            raise InvalidArgument(f"{start.path} already exists in the checkpoint") from None
        finally:
            os.close(parent)

    def _parent(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the entry's parent directory, made as needed, never
        through a symlink."""
        fd = os.dup(self._root)
        try:
            for i, name in enumerate(parts[:-1]):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                child = self._open_dir(fd, name, "/".join(parts[: i + 1]))
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _open_dir(parent: int, name: str, shown: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise InvalidArgument(
                    f"refusing checkpoint path through {shown!r}: a symlink or a file, not a "
                    "directory"
                ) from None
            raise

    def _data(self, data: bytes) -> None:
        if self._file is None or self._digest is None:
            raise InvalidArgument("checkpoint data outside a file")
        if self._written + len(data) > self._expected:
            raise InvalidArgument(f"{self._name}: more bytes than the {self._expected} announced")
        self._digest.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._file, view)
            view = view[written:]
        self._written += len(data)
        self.received_bytes += len(data)

    def _end(self, end: pb.FileEnd) -> None:
        if self._file is None or self._digest is None:
            raise InvalidArgument("a file ended that never started")
        os.close(self._file)
        self._file = None
        name = PurePosixPath(self._name).name
        if self._written != self._expected:
            raise InvalidArgument(
                f"{name}: {self._written} bytes arrived, {self._expected} announced"
            )
        if self._digest.digest() != end.sha256:
            raise InvalidArgument(f"{name}: checksum mismatch (corrupted in transit)")
        self.files += 1

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._root >= 0:
            os.close(self._root)
            self._root = -1
