"""The operator's own Kubernetes calls (kopf does its watches; these are the writes).

The synchronous official client, run in threads, behind a small typed surface.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api.schema import GROUP, VERSION

PROCESSES = "serverlessprocesses"
NODES = "serverlessnodes"


def load_client() -> client.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=os.environ.get("KUBECONFIG")
    )
    return api_client


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    async def patch_process_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch status; False if the object is gone."""
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PROCESSES,
                name,
                {"status": status},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_processes(self) -> list[dict[str, Any]]:
        result = cast(
            dict[str, Any],
            await asyncio.to_thread(
                self.custom.list_cluster_custom_object, GROUP, VERSION, PROCESSES
            ),
        )
        return list(result.get("items", []))

    async def list_serverless_nodes(self) -> list[dict[str, Any]]:
        result = cast(
            dict[str, Any],
            await asyncio.to_thread(self.custom.list_cluster_custom_object, GROUP, VERSION, NODES),
        )
        return list(result.get("items", []))

    async def apply_daemonset(self, manifest: dict[str, Any], field_manager: str) -> None:
        """Server-side apply: the operator owns the fields it sets, and only those."""
        meta = manifest["metadata"]
        await asyncio.to_thread(
            self.apps.patch_namespaced_daemon_set,
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
