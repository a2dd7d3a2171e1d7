"""The node-agent DaemonSet the operator owns, built from its configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NAME = "serverlessos-agent"
STATE_DIR = "/var/lib/serverlessos-agent"
GRPC_PORT, METRICS_PORT = 7420, 7421


@dataclass(frozen=True)
class AgentDaemonSet:
    """What the chart's values say about the agents (the rest is fixed here)."""

    namespace: str = "serverlessos-system"
    image: str = "serverlessos/agent:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    args: list[str] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    # Mutual TLS: each agent asks the operator for its node's certificate (kept in its
    # state dir) and takes calls only from the operator and its peers.
    tls: bool = False


def manifest(config: AgentDaemonSet) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "serverlessos"}
    args = [
        "serve",
        "--node-name=$(NODE_NAME)",
        f"--listen=0.0.0.0:{GRPC_PORT}",
        f"--advertise-address=$(NODE_IP):{GRPC_PORT}",
        f"--metrics-listen=0.0.0.0:{METRICS_PORT}",
        f"--state-dir={STATE_DIR}",
        "--in-cluster",
        *(
            [
                f"--tls-dir={STATE_DIR}/tls",
                "--tls-bootstrap",
                f"--operator-namespace={config.namespace}",
            ]
            if config.tls
            else ["--insecure"]
        ),
        *config.args,
    ]
    probe: dict[str, Any] = (
        {"tcpSocket": {"port": GRPC_PORT}} if config.tls else {"grpc": {"port": GRPC_PORT}}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": NAME,
            "namespace": config.namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "serverlessos-operator"},
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    # Processes and their shims outlive the agent's container: they must
                    # live in the host's PID namespace and cgroups, not the pod's.
                    "hostPID": True,
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": config.node_selector,
                    "tolerations": config.tolerations,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        {
                            "name": "agent",
                            "image": config.image,
                            "imagePullPolicy": config.image_pull_policy,
                            "command": ["serverlessos-agent"],
                            "args": args,
                            "env": [
                                {
                                    "name": "NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                },
                                {
                                    "name": "NODE_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}},
                                },
                            ],
                            "ports": [
                                {"name": "grpc", "containerPort": GRPC_PORT},
                                {"name": "metrics", "containerPort": METRICS_PORT},
                            ],
                            "securityContext": {"privileged": True},
                            "resources": config.resources,
                            # A kubelet has no certificate of the cluster CA: with
                            # TLS the probes can only see the port open.
                            "readinessProbe": {**probe, "periodSeconds": 10},
                            "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
                            "volumeMounts": [
                                {"name": "state", "mountPath": STATE_DIR},
                                {"name": "cgroup", "mountPath": "/sys/fs/cgroup"},
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "state",
                            "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"},
                        },
                        {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup"}},
                    ],
                },
            },
        },
    }
