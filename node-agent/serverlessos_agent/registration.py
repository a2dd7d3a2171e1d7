"""The agent's ServerlessNode: how the operator finds this node and sees its pressure.

The agent itself stays Kubernetes-agnostic; this optional part (on when the agent
has a kubeconfig or runs in a pod) writes one cluster-scoped ServerlessNode
named after the node and refreshes its status every heartbeat. If the API
server is unreachable the agent carries on and tries again next beat.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from serverlessos.quantity import format_bytes, format_cpu

from . import __version__
from .criu import CriuInfo
from .stats import NodeSample

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serverlessos.io", "v1alpha1", "serverlessnodes"


@dataclass(frozen=True)
class NodeFacts:
    node_name: str
    endpoint: str
    cgroup_version: str
    pid_namespaces: bool
    criu: CriuInfo | None = None


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return _rfc3339(time.time())


def node_status(
    facts: NodeFacts, sample: NodeSample, processes: int, ready: bool
) -> dict[str, Any]:
    """The status the agent publishes: pure, so tests can check it directly."""
    now = _now()
    cpu_used_millis = round(sample.cpu_usage_cores * 1000)
    cpu_free_millis = max(0, sample.cpu_capacity_millis - cpu_used_millis)
    capacity = {
        "cpu": format_cpu(sample.cpu_capacity_millis),
        "memory": format_bytes(sample.memory_total),
    }
    return {
        "endpoint": facts.endpoint,
        "agentVersion": __version__,
        "capabilities": {
            "cgroupVersion": facts.cgroup_version,
            "pidNamespaces": facts.pid_namespaces,
            **(
                {
                    "criu": {
                        "version": facts.criu.version,
                        "usable": facts.criu.usable,
                        "features": facts.criu.features,
                        "problem": facts.criu.problem,
                    }
                }
                if facts.criu
                else {}
            ),
        },
        "capacity": capacity,
        "allocatable": capacity,
        "pressure": {
            "cpuSomeAvg10": sample.cpu_pressure.some_avg10,
            "memorySomeAvg10": sample.memory_pressure.some_avg10,
            "ioSomeAvg10": sample.io_pressure.some_avg10,
            "cpuFree": f"{cpu_free_millis}m",
            "memoryFree": f"{sample.memory_available // 2**20}Mi",
            "cpuUsed": f"{cpu_used_millis}m",
            "memoryUsed": f"{sample.memory_used // 2**20}Mi",
            "networkBytesPerSecond": round(sample.network_bytes_per_second),
            "networkCapacityBytesPerSecond": sample.network_capacity_bytes_per_second,
            "sampledAt": _rfc3339(sample.time),
        },
        "processes": processes,
        "lastHeartbeat": now,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "AgentReady" if ready else "AgentCannotStartProcesses",
                "message": "" if ready else "see the agent's log: it lacks a privilege",
                "lastTransitionTime": now,
            }
        ],
    }


class Registrar:
    def __init__(self, facts: NodeFacts, kubeconfig: str | None) -> None:
        self.facts = facts
        if kubeconfig:
            api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self.api = client.CustomObjectsApi(api_client)

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
