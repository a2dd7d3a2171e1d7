"""ClusterCgroup watch events: a budget appeared, changed or went; its members are
re-split next interval, and processes waiting for it are retried."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import GROUP, VERSION
from ..infra.kube import CGROUPS
from .lifecycle import operator_of


@kopf.on.event(GROUP, VERSION, CGROUPS)
async def cgroup_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    operator = operator_of(memo)
    if type == "DELETED":
        operator.budgets.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
        operator.wake.set()
    else:
        await operator.cgroup_changed(body)
