"""Kubernetes RBAC for reading a process's log: a SubjectAccessReview of `get` on
`serverlessprocesses/log` in the process's namespace, as the caller (the API server
authorized the request already; an aggregated server checks again, as the
sample-apiserver does, so its port grants nothing by itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .discovery import GROUP, RESOURCE, SUBRESOURCE
from .front_proxy import Caller

Review = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # spec -> status


class LogAccess:
    def __init__(self, review: Review) -> None:
        self.review = review

    async def check(self, caller: Caller, namespace: str, name: str) -> str | None:
        """None if the caller may read the log; else why not."""
        status = await self.review(
            {
                "user": caller.user,
                "groups": list(caller.groups),
                "extra": caller.extra,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "get",
                    "group": GROUP,
                    "resource": RESOURCE,
                    "subresource": SUBRESOURCE,
                    "name": name,
                },
            }
        )
        if status.get("allowed"):
            return None
        because = status.get("reason") or status.get("evaluationError") or ""
        return (
            f'{RESOURCE}.{GROUP} "{name}" is forbidden: User "{caller.user}" cannot get '
            f'resource "{RESOURCE}/{SUBRESOURCE}" in API group "{GROUP}" in the namespace '
            f'"{namespace}"' + (f": {because}" if because else "")
        )
