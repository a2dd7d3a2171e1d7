"""Process identity from /proc, safe against PID reuse."""

from __future__ import annotations

import os


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which PID started (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")


def open_pidfd(pid: int, expected_start: int) -> int | None:
    """A pidfd for PID if it is still the process that started at expected_start.

    Checking the start time after opening the pidfd closes the reuse race: the
    pidfd pins the process it was opened for.
    """
    if pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if start_time(pid) != expected_start or is_zombie(pid):
        os.close(fd)
        return None
    return fd
