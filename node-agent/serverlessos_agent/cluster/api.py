"""A Kubernetes client: from a kubeconfig, or the pod's own account."""

from __future__ import annotations

from kubernetes import client, config


def api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        made: client.ApiClient = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        return made
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
