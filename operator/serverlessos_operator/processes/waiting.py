"""Processes waiting to start, retried until they run: Unschedulable, refused by a node,
waiting for their budget, their node lost, or placed but not confirmed running (the
agent was unreachable); and resizes not applied yet.

Each process is tried on its own (infra/isolation.py): one whose start fails in a way
the operator did not expect gets condition Synced=False and a Warning Event with the
reason, and is retried with backoff, while the others are tried as usual. `Retry` is
not a failure: it says when to look again (the next interval).
"""

from __future__ import annotations

import contextlib
import functools

from ..api.conditions import find, set_condition
from ..infra.events import EventSink
from ..infra.isolation import Failure, Isolation
from .book import Key, ProcessBook, ProcessInfo
from .resizer import ProcessResizer
from .retry import Retry
from .starter import ProcessStarter

SYNCED = "Synced"


class WaitingProcesses:
    def __init__(
        self,
        book: ProcessBook,
        starter: ProcessStarter,
        resizer: ProcessResizer,
        events: EventSink,
        isolation: Isolation[Key] | None = None,
    ) -> None:
        self.book = book
        self.starter = starter
        self.resizer = resizer
        self.events = events
        self.isolation: Isolation[Key] = isolation or Isolation()

    async def retry(self) -> None:
        """One pass over every process that waits (or has a resize to apply)."""
        for info in self.book:
            if (info.waiting or info.resize_pending) and self.isolation.due(info.key):
                await self.try_one(info)

    async def try_one(self, info: ProcessInfo) -> bool:
        """Start (or resize) one process now; False if it failed unexpectedly."""
        return await self.isolation.run(
            info.key,
            f"reconciling {info.namespace}/{info.name}",
            functools.partial(self._work, info),
            functools.partial(self._report, info),
            functools.partial(self._recovered, info),
        )

    def forget(self, key: Key) -> None:
        self.isolation.forget(key)

    async def _work(self, info: ProcessInfo) -> None:
        if info.resize_pending:
            await self.resizer.apply(info.key)
        if info.waiting and self.book.current(info):
            with contextlib.suppress(Retry):
                await self.starter.ensure(info)

    async def _report(self, info: ProcessInfo, failure: Failure) -> None:
        reason = getattr(failure.error, "reason", "ReconcileError")  # e.g. Refused's
        self.events.post(info.ref, "Warning", reason, failure.message)
        async with self.book.lock(info.key):
            if self.book.current(info):
                conditions = set_condition(info.conditions, SYNCED, False, reason, failure.message)
                await self.book.patch(info, {"conditions": conditions})

    async def _recovered(self, info: ProcessInfo) -> None:
        async with self.book.lock(info.key):
            synced = find(info.conditions, SYNCED)
            if self.book.current(info) and synced is not None and not synced.true:
                conditions = set_condition(info.conditions, SYNCED, True, "Reconciled")
                await self.book.patch(info, {"conditions": conditions})
