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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Span:
    """A byte range of one log file."""

    path: Path
    start: int
    end: int


def tail(path: Path, lines: int, keep: int) -> tuple[list[Span], int]:
    """Where the last `lines` lines (0 = all retained) are, oldest file first, and the
    current file's size (where following should continue). Found by reading blocks
    back from the end: memory stays bounded by READ_CHUNK whatever the logs hold.
    A line is what ends with a newline (the last one may not)."""
    spans = []
    size = 0
    for file in [rotated(path, i) for i in range(keep, 0, -1)] + [path]:
        try:
            length = file.stat().st_size
        except FileNotFoundError:
            continue
        if file == path:
            size = length
        if length:
            spans.append(Span(file, 0, length))
    if lines <= 0 or not spans:
        return spans, size
    wanted = lines + (1 if _ends_with_newline(spans[-1]) else 0)
    for i in range(len(spans) - 1, -1, -1):
        start = _after_nth_newline_from_end(spans[i], wanted)
        if isinstance(start, int):
            return [Span(spans[i].path, start, spans[i].end), *spans[i + 1 :]], size
        wanted -= start[0]  # newlines this file had: look further back for the rest
    return spans, size


def read_spans(spans: Iterable[Span]) -> Iterator[bytes]:
    """The spans' bytes, in pieces of at most READ_CHUNK."""
    for span in spans:
        try:
            with open(span.path, "rb") as f:
                f.seek(span.start)
                left = span.end - span.start
                while left > 0:
                    chunk = f.read(min(READ_CHUNK, left))
                    if not chunk:
                        break  # truncated (rotated) meanwhile
                    left -= len(chunk)
                    yield chunk
        except FileNotFoundError:
            continue


def _ends_with_newline(span: Span) -> bool:
    with open(span.path, "rb") as f:
        f.seek(span.end - 1)
        return f.read(1) == b"\n"


def _after_nth_newline_from_end(span: Span, n: int) -> int | tuple[int]:
    """The offset just after the n-th newline from the span's end, or (how many it
    has,) when it has fewer."""
    seen = 0
    with open(span.path, "rb") as f:
        end = span.end
        while end > span.start:
            begin = max(span.start, end - READ_CHUNK)
            f.seek(begin)
            block = f.read(end - begin)
            at = len(block)
            while True:
                at = block.rfind(b"\n", 0, at)
                if at < 0:
                    break
                seen += 1
                if seen == n:
                    return begin + at + 1
            end = begin
    return (seen,)


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
