"""Process output: one log file per process, rotated by size, tailed and followed.

The process writes its stdout and stderr straight to `output.log` (O_APPEND), a
regular file rather than a pipe, so nothing of the agent sits in its way and
CRIU can checkpoint it later. Rotation is copy-then-truncate: the process keeps
its descriptor, and O_APPEND puts its next write at the new end. A line written
between the copy and the truncate can be lost; that is the price of never
touching the process, as with logrotate's copytruncate.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

FOLLOW_POLL = 0.1
READ_CHUNK = 64 * 1024


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotate_if_needed(path: Path, max_bytes: int, keep: int) -> bool:
    """Rotate when the log is over max_bytes; keeps `keep` older files."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            older.replace(rotated(path, index + 1))
    if keep > 0:
        shutil.copyfile(path, rotated(path, 1))
    os.truncate(path, 0)
    return True


def rotate_all(paths: Iterable[Path], max_bytes: int, keep: int) -> None:
    for path in paths:
        rotate_if_needed(path, max_bytes, keep)


def tail(path: Path, lines: int, keep: int) -> tuple[bytes, int]:
    """The last `lines` lines (0 = all retained), oldest file first, and the
    current file's size (where following should continue)."""
    files = [rotated(path, i) for i in range(keep, 0, -1)] + [path]
    data = b""
    size = 0
    for file in files:
        try:
            content = file.read_bytes()
        except FileNotFoundError:
            continue
        data += content
        if file == path:
            size = len(content)
    if lines > 0:
        parts = data.splitlines(keepends=True)
        data = b"".join(parts[-lines:])
    return data, size


async def follow(path: Path, offset: int, finished: Callable[[], bool]) -> AsyncIterator[bytes]:
    """New bytes appended after offset, until finished() is true and all is read.

    A file that shrank was rotated: continue from its start.
    """
    while True:
        done = finished()  # sampled before reading, so the last output is not missed
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < offset:
            offset = 0
        while size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(min(READ_CHUNK, size - offset))
            if not chunk:
                break
            offset += len(chunk)
            yield chunk
        if done:
            return
        await asyncio.sleep(FOLLOW_POLL)
