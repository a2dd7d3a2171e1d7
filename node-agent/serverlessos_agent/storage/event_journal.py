"""The lifecycle event journal: numbered, persisted, replayable.

Every event gets the next sequence number and is appended to
`<state>/events.jsonl` before anyone sees it, so a watcher that reconnects with
the last number it saw misses nothing, even across an agent restart. The last
`retain` events are kept; asking for older ones is OUT_OF_RANGE (list again,
then watch from the list's revision, as with Kubernetes' 410 Gone).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from serverlessos.files import atomic_write

from ..errors import OutOfRange

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    STARTED = "Started"
    START_FAILED = "StartFailed"
    EXITED = "Exited"
    OOM_KILLED = "OOMKilled"
    RESTARTED = "Restarted"
    RESOURCES_UPDATED = "ResourcesUpdated"
    STOPPED = "Stopped"
    FROZEN = "Frozen"
    RESUMED = "Resumed"
    RESTORED = "Restored"


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    type: EventType
    namespace: str
    record: dict[str, Any]  # ProcessRecord.to_json() as of this event
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "type": self.type.value,
            "namespace": self.namespace,
            "record": self.record,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(**{**data, "type": EventType(data["type"])})


class EventJournal:
    def __init__(self, path: Path, retain: int = 4096) -> None:
        self.path = path
        self.retain = retain
        self._events: deque[Event] = deque(maxlen=retain)
        self._seq = 0
        self._lines = 0
        self._changed = asyncio.Condition()
        self._load()
        self._file = _append(path)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if data and not data.endswith(b"\n"):
            # A line torn by a crash: drop it, or the next append would be glued to it.
            data = data[: data.rfind(b"\n") + 1]
            atomic_write(self.path, data, durable=False)
        lines = data.decode("utf-8", errors="replace").splitlines()
        leaked = False
        for line in lines:
            try:
                event = Event.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
            leaked = _blank_env_values(event.record) or leaked
            self._events.append(event)
            self._seq = max(self._seq, event.seq)
        self._lines = len(lines)
        if leaked:  # a journal from before values were kept out of it: rewrite it without
            self._rewrite()

    @property
    def revision(self) -> int:
        return self._seq

    def append(self, type_: EventType, record: dict[str, Any], message: str = "") -> Event:
        self._seq += 1
        event = Event(self._seq, time.time(), type_, record["spec"]["namespace"], record, message)
        self._file.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
        self._file.flush()
        self._lines += 1
        self._events.append(event)
        if self._lines > 2 * self.retain:
            self._compact()
        asyncio.get_running_loop().create_task(self._notify())
        return event

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _compact(self) -> None:
        self._file.close()
        self._rewrite()
        self._file = _append(self.path)

    def _rewrite(self) -> None:
        """The file holds exactly the retained events (atomically replaced)."""
        data = "".join(
            json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in self._events
        ).encode()
        atomic_write(self.path, data, durable=False)
        self._lines = len(self._events)

    def since(self, seq: int) -> list[Event]:
        if seq > self._seq:
            raise OutOfRange(
                f"event {seq} is ahead of this agent's last event {self._seq} "
                "(was its state dir reset?); list processes and watch from the list's revision"
            )
        oldest = self._events[0].seq if self._events else self._seq + 1
        if seq < oldest - 1:
            raise OutOfRange(
                f"events after {seq} are no longer retained (oldest kept: {oldest}); "
                "list processes and watch from the list's revision"
            )
        return [e for e in self._events if e.seq > seq]

    async def watch(self, since: int) -> AsyncIterator[Event]:
        last = since
        while True:
            async with self._changed:
                # Checked under the condition's lock, so no notification is missed.
                pending = self.since(last)
                if not pending:
                    await self._changed.wait()
                    continue
            for event in pending:
                yield event
                last = event.seq

    def close(self) -> None:
        self._file.close()


def _blank_env_values(record: dict[str, Any]) -> bool:
    """Blank the environment values of a journalled record in place (the journal never
    keeps them); True if it had any."""
    env = (record.get("spec") or {}).get("env") or {}
    if not any(env.values()):
        return False
    record["spec"]["env"] = dict.fromkeys(env, "")
    return True


def _append(path: Path) -> TextIO:
    """The journal, kept open for appends; the agent's alone (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return open(fd, "a", encoding="utf-8")
