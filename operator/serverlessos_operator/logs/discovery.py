"""The API group's discovery documents and the Status bodies of its errors, as the API
server's aggregator and kubectl expect them."""

from __future__ import annotations

from typing import Any

GROUP = "logs.serverlessos.io"
VERSION = "v1alpha1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"  # the APIService object the chart makes
RESOURCE = "serverlessprocesses"
SUBRESOURCE = "log"

Document = dict[str, Any]


def _version() -> Document:
    return {"groupVersion": GROUP_VERSION, "version": VERSION}


def group() -> Document:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_version()],
        "preferredVersion": _version(),
    }


def group_list() -> Document:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]}


def resource_list() -> Document:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": f"{RESOURCE}/{SUBRESOURCE}",
                "singularName": "",
                "namespaced": True,
                "kind": "ServerlessProcess",
                "verbs": ["get"],
            }
        ],
    }


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status(code: int, message: str) -> Document:
    """A metav1.Status failure: kubectl and client libraries print its message."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "InternalError"),
        "code": code,
    }
