"""Kubernetes Events about our objects, posted without waiting (a lost Event is only a
lost note; the status says what matters). Not kopf.event: that needs kopf's handler
context, and agent reports and loops run outside it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

log = logging.getLogger(__name__)


class EventSink(Protocol):
    def post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class EventPoster(Protocol):
    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str
    ) -> None: ...


class EventRecorder:
    def __init__(self, kube: EventPoster) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task[None]] = set()  # kept so they are not collected

    def post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self._spawn(self._post(involved, type_, reason, message))

    async def _post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(involved, type_, reason, message)
        except Exception as exc:
            log.debug("could not post event %s for %s: %s", reason, involved["metadata"], exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
