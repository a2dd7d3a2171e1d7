"""The agent's ServerlessNode: how the operator finds this node and sees its pressure.

The agent itself stays Kubernetes-agnostic; this optional part (on when the agent
has a kubeconfig or runs in a pod) writes one cluster-scoped ServerlessNode
named after the node and refreshes its status every heartbeat. If the API
server is unreachable the agent carries on and tries again next beat.

The daemon imports it only when the agent registers, so an agent without
Kubernetes never loads the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..observe.node_status import NodeFacts
from .api import api_client

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serverlessos.io", "v1alpha1", "serverlessnodes"


class Registrar:
    def __init__(self, facts: NodeFacts, kubeconfig: str | None) -> None:
        self.facts = facts
        self.api = client.CustomObjectsApi(api_client(kubeconfig))

    def _beat(self, status: dict[str, Any]) -> None:
        """One write per beat; the object is created only when it is missing."""
        name = self.facts.node_name
        try:
            self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ServerlessNode",
                "metadata": {"name": name},
                "spec": {},
            }
            self.api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
            self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, {"status": status}
            )

    async def run(self, interval: float, status: Callable[[], dict[str, Any]]) -> None:
        failing = False
        while True:
            try:
                await asyncio.to_thread(self._beat, status())
                if failing:
                    log.info("ServerlessNode %s is being updated again", self.facts.node_name)
                failing = False
            except Exception as exc:  # the API server may be down; keep the node running
                if not failing:
                    log.warning("cannot update ServerlessNode %s: %s", self.facts.node_name, exc)
                failing = True
            await asyncio.sleep(interval)
