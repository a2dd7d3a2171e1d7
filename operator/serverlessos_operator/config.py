"""The operator's configuration: environment variables (set by the Helm chart)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .infra.daemonset import AgentDaemonSet
from .rebalancing.policy import RebalanceConfig

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _json(env: Mapping[str, str], key: str, default: Any) -> Any:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON: {exc}") from exc


def _section(env: Mapping[str, str], key: str, names: Mapping[str, str]) -> dict[str, Any]:
    """A JSON object of camelCase settings (as in Helm values) -> keyword arguments;
    an unknown key or a non-number is an error that names it (no silent defaults)."""
    raw = _json(env, key, {})
    if not isinstance(raw, dict):
        raise ValueError(f"{key} must be a JSON object, got {raw!r}")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(
            f"{key}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}"
        )
    out: dict[str, Any] = {}
    for camel, value in raw.items():
        flag = names[camel] == "enabled"
        if isinstance(value, bool) != flag or not isinstance(value, int | float):
            kind = "true or false" if flag else "a number"
            raise ValueError(f"{key}: {camel} must be {kind}, got {value!r}")
        out[names[camel]] = value
    return out


@dataclass(frozen=True)
class PlacementConfig:
    choices: int = 4  # power of d: candidates sampled per decision in large clusters
    scan_below: int = 64  # clusters this small are scanned whole
    stale_after: float = 15.0  # seconds after which a node's report is unknown
    settle: float = 5.0  # seconds a placement counts as load beyond the report before it
    psi_weight: float = 1.0  # pressure points per percent of PSI stall


@dataclass(frozen=True)
class QuotaConfig:
    interval: float = 2.0  # seconds between ClusterCgroup splits
    lease: float = 10.0  # seconds an agent holds a share without renewal


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "serverlessos-system"
    manage_daemonset: bool = True
    daemonset: AgentDaemonSet = field(default_factory=AgentDaemonSet)
    heartbeat_grace: float = 30.0
    # Mutual TLS to the agents, with certificates the operator issues (auth/); the
    # agents' ServiceAccount, the only requester whose node certificates it signs.
    tls: bool = False
    agent_user: str = "system:serviceaccount:serverlessos-system:serverlessos-agent"
    usage_interval: float = 2.0  # agents' samples: pressure, usage, quota demand
    retry_interval: float = 5.0
    metrics_port: int = 8081  # 0 = off
    # The log API (logs/) behind the API server: its port (0 = off) and the Service
    # that routes to it, whose name its serving certificate carries.
    # Dial an agent only at one of its core Node's addresses (nodes/book.py).
    check_node_addresses: bool = True
    log_api_port: int = 8443
    log_api_service: str = "serverlessos-operator"
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    rebalancing: RebalanceConfig = field(default_factory=RebalanceConfig)
    rebalancing_enabled: bool = True
    quota: QuotaConfig = field(default_factory=QuotaConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        rebalancing = _section(env, "SERVERLESSOS_REBALANCING", REBALANCING)
        enabled = bool(rebalancing.pop("enabled", True))
        namespace = env.get("SERVERLESSOS_NAMESPACE") or (
            SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else cls.namespace
        )
        return cls(
            namespace=namespace,
            manage_daemonset=env.get("SERVERLESSOS_MANAGE_DAEMONSET", "true").lower() == "true",
            daemonset=AgentDaemonSet(
                namespace=namespace,
                image=env.get("SERVERLESSOS_AGENT_IMAGE", AgentDaemonSet.image),
                image_pull_policy=env.get(
                    "SERVERLESSOS_AGENT_IMAGE_PULL_POLICY", AgentDaemonSet.image_pull_policy
                ),
                args=list(_json(env, "SERVERLESSOS_AGENT_ARGS", [])),
                node_selector=dict(_json(env, "SERVERLESSOS_AGENT_NODE_SELECTOR", {})),
                tolerations=list(_json(env, "SERVERLESSOS_AGENT_TOLERATIONS", [])),
                resources=dict(_json(env, "SERVERLESSOS_AGENT_RESOURCES", {})),
                tls=env.get("SERVERLESSOS_TLS", "false").lower() == "true",
            ),
            heartbeat_grace=float(env.get("SERVERLESSOS_HEARTBEAT_GRACE", cls.heartbeat_grace)),
            tls=env.get("SERVERLESSOS_TLS", "false").lower() == "true",
            agent_user=env.get(
                "SERVERLESSOS_AGENT_USER",
                f"system:serviceaccount:{namespace}:serverlessos-agent",
            ),
            usage_interval=float(env.get("SERVERLESSOS_USAGE_INTERVAL", cls.usage_interval)),
            retry_interval=float(env.get("SERVERLESSOS_RETRY_INTERVAL", cls.retry_interval)),
            metrics_port=int(env.get("SERVERLESSOS_METRICS_PORT", cls.metrics_port)),
            check_node_addresses=env.get("SERVERLESSOS_CHECK_NODE_ADDRESSES", "true").lower()
            == "true",
            log_api_port=int(env.get("SERVERLESSOS_LOG_API_PORT", cls.log_api_port)),
            log_api_service=env.get("SERVERLESSOS_LOG_API_SERVICE", cls.log_api_service),
            placement=PlacementConfig(**_section(env, "SERVERLESSOS_PLACEMENT", PLACEMENT)),
            rebalancing=RebalanceConfig(**rebalancing),
            rebalancing_enabled=enabled,
            quota=QuotaConfig(**_section(env, "SERVERLESSOS_CLUSTER_CGROUPS", QUOTA)),
        )


# Helm values (camelCase) -> fields; the chart's values.yaml documents each.
PLACEMENT = {
    "choices": "choices",
    "scanBelow": "scan_below",
    "staleAfterSeconds": "stale_after",
    "settleSeconds": "settle",
    "psiWeight": "psi_weight",
}
REBALANCING = {
    "enabled": "enabled",
    "intervalSeconds": "interval",
    "highWatermark": "high_watermark",
    "lowWatermark": "low_watermark",
    "hotIntervals": "hot_intervals",
    "maxMigrationsPerNode": "max_per_node",
    "cooldownSeconds": "cooldown",
    "migrationsPerMinute": "rate_per_minute",
    "migrationsPerMinutePer100Nodes": "rate_per_100_nodes",
    "burst": "burst",
    "costBase": "cost_base",
    "costPerGiB": "cost_per_gib",
    "targetChoices": "target_choices",
}
QUOTA = {"intervalSeconds": "interval", "leaseSeconds": "lease"}
