"""Operator start, stop and liveness."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from ..app import Operator
from ..config import OperatorConfig
from ..infra.kube import Kube

FINALIZER = "serverlessos.io/finalizer"


def operator_of(memo: kopf.Memo) -> Operator:
    return cast(Operator, memo["operator"])


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Silent watch hangs are kopf's most reported failure: bound every watch.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.persistence.finalizer = FINALIZER
    # Status is ours (and pruned to the CRD's schema): keep kopf's state in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="serverlessos.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="serverlessos.io"
    )
    # Post our own Events; kopf's per-handler chatter only when it is a problem.
    settings.posting.level = logging.WARNING
    # Kubernetes API calls run in threads (the official client is synchronous);
    # a burst of creations needs more than the default handful.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    operator = Operator(OperatorConfig.from_env(), Kube())
    memo["operator"] = operator
    await operator.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "operator" in memo:
        await operator_of(memo).close()


@kopf.on.probe(id="processes")
async def probe_processes(memo: kopf.Memo, **_: Any) -> int:
    return len(operator_of(memo).processes) if "operator" in memo else 0
