"""The operator's configuration: environment variables (set by the Helm chart)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _json(env: Mapping[str, str], key: str, default: Any) -> Any:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "serverlessos-system"
    manage_daemonset: bool = True
    agent_image: str = "serverlessos/agent:0.1.0"
    agent_image_pull_policy: str = "IfNotPresent"
    agent_args: list[str] = field(default_factory=list)
    agent_node_selector: dict[str, str] = field(default_factory=dict)
    agent_tolerations: list[dict[str, Any]] = field(default_factory=list)
    agent_resources: dict[str, Any] = field(default_factory=dict)
    heartbeat_grace: float = 30.0
    usage_interval: float = 10.0
    retry_interval: float = 5.0
    metrics_port: int = 8081  # 0 = off

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        namespace = env.get("SERVERLESSOS_NAMESPACE") or (
            SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else cls.namespace
        )
        return cls(
            namespace=namespace,
            manage_daemonset=env.get("SERVERLESSOS_MANAGE_DAEMONSET", "true").lower() == "true",
            agent_image=env.get("SERVERLESSOS_AGENT_IMAGE", cls.agent_image),
            agent_image_pull_policy=env.get(
                "SERVERLESSOS_AGENT_IMAGE_PULL_POLICY", cls.agent_image_pull_policy
            ),
            agent_args=list(_json(env, "SERVERLESSOS_AGENT_ARGS", [])),
            agent_node_selector=dict(_json(env, "SERVERLESSOS_AGENT_NODE_SELECTOR", {})),
            agent_tolerations=list(_json(env, "SERVERLESSOS_AGENT_TOLERATIONS", [])),
            agent_resources=dict(_json(env, "SERVERLESSOS_AGENT_RESOURCES", {})),
            heartbeat_grace=float(env.get("SERVERLESSOS_HEARTBEAT_GRACE", cls.heartbeat_grace)),
            usage_interval=float(env.get("SERVERLESSOS_USAGE_INTERVAL", cls.usage_interval)),
            retry_interval=float(env.get("SERVERLESSOS_RETRY_INTERVAL", cls.retry_interval)),
            metrics_port=int(env.get("SERVERLESSOS_METRICS_PORT", cls.metrics_port)),
        )
