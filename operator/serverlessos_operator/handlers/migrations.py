"""ProcessMigration watch events: new ones, and (in the initial listing) those an
earlier operator left active."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import GROUP, VERSION
from ..infra.kube import MIGRATIONS
from .lifecycle import operator_of


@kopf.on.event(GROUP, VERSION, MIGRATIONS)
async def migration_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED":
        await operator_of(memo).migration_changed(body)
