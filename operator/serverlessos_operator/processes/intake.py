"""ServerlessProcess objects into the books, parsed into the models at the door.

One the models refuse never enters the books (infra/refusals.py reports it); once it
parses again, its Synced condition is set back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api.conditions import find, set_condition
from ..api.meta import describe
from ..api.v1alpha1 import ServerlessProcess
from ..infra.refusals import INVALID, Kind, Refusals
from .book import ProcessBook, ProcessInfo
from .waiting import SYNCED


class ProcessIntake:
    def __init__(self, book: ProcessBook, refusals: Refusals) -> None:
        self.book = book
        self.refusals = refusals

    async def admit(self, body: Mapping[str, Any]) -> ProcessInfo | None:
        """The object merged into the books; None if the models refuse it (reported)."""
        try:
            obj = ServerlessProcess.model_validate(body)
        except ValidationError as exc:
            await self.refusals.refuse(Kind.PROCESS, body, describe(exc))
            return None
        was_refused = self.refusals.clear(Kind.PROCESS, obj.metadata.namespace, obj.metadata.name)
        info = self.book.upsert(obj)
        synced = find(info.conditions, SYNCED)
        if was_refused or (synced is not None and synced.reason == INVALID):
            async with self.book.lock(info.key):
                conditions = set_condition(info.conditions, SYNCED, True, "Reconciled")
                await self.book.patch(info, {"conditions": conditions})
        return info
