"""Each migration's directory, <state>/migrations/<id>/, its meta.json, and its lock.

meta.json says what the migration is here (role: source or target) and how far
it got (on the target: receiving, received, restored); images/ holds CRIU's
checkpoint and, on the target until the restore, work/ and logs/ the process's
files. One lock per migration id is held by every step (checkpoint, receive,
restore, finish), so none runs in the middle of another.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Any

from serverlessos.files import atomic_write_json, read_json

from ..errors import InvalidArgument

_MIGRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LEFTOVER_TTL = 3600.0  # received checkpoints nobody restored are removed after this


class MigrationDirs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # checkpoints: processes' memory and files
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, migration_id: str) -> asyncio.Lock:
        return self._locks.setdefault(migration_id, asyncio.Lock())

    def path(self, migration_id: str) -> Path:
        """The migration's directory; the id comes over the wire, so it is checked (the
        operator uses the ProcessMigration's uid)."""
        if not _MIGRATION_ID.fullmatch(migration_id):
            raise InvalidArgument(
                f"bad migration id {migration_id!r}: use 1-128 letters, digits, '-', '_' "
                "or '.', starting with a letter or digit"
            )
        return self.root / migration_id

    def fresh(self, migration_id: str) -> Path:
        """An empty directory for the migration (whatever an earlier try left is gone)."""
        directory = self.path(migration_id)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def read_meta(self, migration_id: str) -> dict[str, Any] | None:
        meta: dict[str, Any] | None = read_json(self.path(migration_id) / "meta.json")
        return meta

    def write_meta(self, migration_id: str, meta: dict[str, Any]) -> None:
        atomic_write_json(self.path(migration_id) / "meta.json", meta)

    def remove(self, migration_id: str) -> None:
        shutil.rmtree(self.path(migration_id), ignore_errors=True)

    def remove_leftovers(self, now: float | None = None) -> None:
        """Received checkpoints never restored nor finished (their operator gave up)."""
        now = time.time() if now is None else now
        for meta_path in self.root.glob("*/meta.json"):
            meta = read_json(meta_path) or {}
            stale = now - float(meta.get("created", now)) > LEFTOVER_TTL
            if meta.get("role") == "target" and meta.get("state") != "restored" and stale:
                shutil.rmtree(meta_path.parent, ignore_errors=True)
