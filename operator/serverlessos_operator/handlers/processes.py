"""ServerlessProcess watch events and deletion.

Creation is driven from the watch event rather than kopf's create/resume handlers:
those wait for kopf's finalizer round trip and write progress annotations, extra API
writes that cost seconds on a busy API server. The waiting loop retries what the
first attempt does not finish.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import GROUP, VERSION
from ..infra.kube import PROCESSES
from ..infra.refusals import identity
from ..processes.retry import Retry
from .lifecycle import operator_of


@kopf.on.event(GROUP, VERSION, PROCESSES)
async def process_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event of a ServerlessProcess; type None is the initial listing."""
    operator = operator_of(memo)
    if type == "DELETED":
        namespace, name, uid, _generation = identity(body)
        await operator.process_gone(namespace, name, uid)
        return
    info = await operator.intake.admit(body)
    if info is None:
        return  # refused (reported)
    if info.resize_pending:
        operator.spawn(operator.resizer.apply(info.key))
    if type in ("ADDED", None) and info.waiting:
        operator.start_soon(info)


@kopf.on.delete(GROUP, VERSION, PROCESSES)
async def delete_process(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace, name, uid, _generation = identity(body)
    node = (body.get("status") or {}).get("node")
    try:
        await operator_of(memo).deleter.delete(
            (namespace, name), uid, node if isinstance(node, str) else None
        )
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
