"""The Helm chart: lint, accepted by the real API server, installable."""

from __future__ import annotations

import shutil

import pytest

from .conftest import ENV, REPO, kubectl, run

CHART = REPO / "charts" / "serverlessos"
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHART.exists(), reason="no chart"),
]


def helm(*args: str, check: bool = True):
    return run(shutil.which("helm", path=ENV["PATH"]) or "helm", *args, check=check)


def test_helm_lint_is_clean() -> None:
    result = helm("lint", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_rendered_chart_is_accepted_by_the_api_server() -> None:
    rendered = helm(
        "template",
        "sos",
        str(CHART),
        "-n",
        "serverlessos-system",
        "--set",
        "serviceMonitor.enabled=false",
    ).stdout
    # Each object names its namespace (one RoleBinding lives in kube-system: the log API
    # reads the API server's front-proxy configuration there).
    assert "namespace: kube-system" in rendered
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert (
        "created (server dry run)" in result.stdout
        or "configured (server dry run)" in result.stdout
        or "unchanged (server dry run)" in result.stdout
    )


def test_helm_install_succeeds() -> None:
    namespace = "sos-helm-e2e"
    try:
        result = helm(
            "upgrade",
            "--install",
            "sos-e2e",
            str(CHART),
            "-n",
            namespace,
            "--create-namespace",
            "--skip-crds",
            "--set",
            "agent.enabled=false",
            # One log API per cluster (its APIService is cluster-wide): the local
            # cluster's operator serves it already.
            "--set",
            "logs.enabled=false",
            "--wait=false",
        )
        assert "STATUS: deployed" in result.stdout
        deployments = kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
        assert deployments.strip()
    finally:
        helm("uninstall", "sos-e2e", "-n", namespace, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
