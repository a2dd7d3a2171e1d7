"""The ServerlessNode status the agent publishes: pure, so tests can check it directly.

No Kubernetes here (registration.py writes it): an agent that does not register
never loads the Kubernetes client.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

from serverlessos.quantity import format_bytes, format_cpu

from .. import __version__
from ..runtime.criu import CriuInfo
from .stats import NodeSample


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
