"""One object the operator cannot handle never blocks the others.

Such an object gets into a real cluster the way it does in production: it was stored
while the CRD's schema was looser (an older CRD, a CRD upgraded afterwards), and the
API server keeps serving it. The test loosens the ServerlessProcess CRD for a moment,
stores a process whose CPU is not a quantity, and restores the CRD; then, while that
object exists, other processes are placed, and one waiting for a node is retried and
placed once a node fits. The bad object gets a Warning Event and a condition naming
the field. Local cluster only: it changes a CRD the whole cluster shares.
"""

from __future__ import annotations

import json

import pytest

from .conftest import (
    REPO,
    apply,
    condition,
    get_json,
    kubectl,
    local_only,
    process_manifest,
    status_of,
    wait_for,
    wait_phase,
)

pytestmark = [local_only, pytest.mark.timeout(240)]
CRD = "serverlessprocesses.serverlessos.io"
CRD_FILE = REPO / "crds" / "serverlessos.io_serverlessprocesses.yaml"
CPU_RULES = (
    "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/resources"
    "/properties/cpu/x-kubernetes-validations"
)


def _store_a_process_the_current_schema_refuses(namespace: str) -> None:
    loosen = [{"op": "remove", "path": CPU_RULES}]
    kubectl("patch", "crd", CRD, "--type=json", "-p", json.dumps(loosen))
    try:
        bad = process_manifest("unusable", namespace, command=["sleep", "3600"])
        bad["spec"]["resources"] = {"cpu": "lots"}
        # The API server may take a moment to serve the loosened schema.
        wait_for(lambda: apply(bad, check=False).returncode == 0, timeout=30, message="stored")
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    crd = get_json("crd", CRD)
    resources = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert resources["properties"]["resources"]["properties"]["cpu"]["x-kubernetes-validations"]


def test_other_processes_are_placed_and_retried_while_an_unusable_one_exists(
    namespace: str,
) -> None:
    _store_a_process_the_current_schema_refuses(namespace)
    node = get_json("serverlessnodes")["items"][0]["metadata"]["name"]
    label = f"sos-isolation-{namespace}"
    try:
        # Waiting for a node that fits: only a retry can place it.
        apply(
            process_manifest(
                "waits", namespace, command=["sleep", "3600"], nodeSelector={label: "yes"}
            ),
            process_manifest("fresh", namespace, command=["sleep", "3600"]),
        )
        wait_phase("fresh", namespace, "Running", timeout=30)
        wait_phase("waits", namespace, "Unschedulable", timeout=30)
        kubectl("label", "node", node, f"{label}=yes")
        running = wait_phase("waits", namespace, "Running", timeout=60)
        assert running["node"] == node
    finally:
        kubectl("label", "node", node, f"{label}-", check=False)
    # The unusable one is told why, by field, and holds nothing.
    status = wait_for(
        lambda: (
            condition(status_of("unusable", namespace), "Synced")
            and status_of("unusable", namespace)
        ),
        timeout=30,
        message="a Synced condition on the unusable process",
    )
    synced = condition(status, "Synced")
    assert synced["status"] == "False" and synced["reason"] == "InvalidSpec"
    assert (
        "spec.resources.cpu" in synced["message"]
        and "'lots' is not a quantity" in (synced["message"])
    )
    assert status.get("phase") == "Pending" and not status.get("node")
    events = get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=unusable")
    assert any(e["type"] == "Warning" and e["reason"] == "InvalidSpec" for e in events["items"]), (
        events["items"]
    )
    # It can still be deleted (nothing runs for it).
    kubectl("delete", "sp", "unusable", "-n", namespace, "--timeout=30s")
