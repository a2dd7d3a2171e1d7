"""Crash-safe files: every write goes to a temporary file that is (optionally)
fsynced and renamed over the old one, so a SIGKILL (or a power cut) at any point
leaves either the old or the new content, never a torn file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, separators=(",", ":")).encode(), durable=durable)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None if it does not exist."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
