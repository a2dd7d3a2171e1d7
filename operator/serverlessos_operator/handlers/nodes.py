"""ServerlessNode (an agent's) and core Node (labels, taints) watch events."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import GROUP, VERSION
from ..infra.kube import NODES
from ..scheduling.constraints import Taint
from .lifecycle import operator_of


@kopf.on.event(GROUP, VERSION, NODES)
async def serverless_node_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    operator = operator_of(memo)
    if type == "DELETED":
        await operator.node_removed(body["metadata"]["name"])
    else:
        await operator.node_changed(body)


@kopf.on.event("", "v1", "nodes")
async def kube_node_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    taints = tuple(
        Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "NoSchedule")))
        for t in (body.get("spec") or {}).get("taints") or []
    )
    labels = {str(k): str(v) for k, v in (body["metadata"].get("labels") or {}).items()}
    addresses = frozenset(
        str(a.get("address", "")) for a in (body.get("status") or {}).get("addresses") or []
    )
    operator_of(memo).nodes.upsert_kube_node(body["metadata"]["name"], labels, taints, addresses)
