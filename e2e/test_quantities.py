"""The API server and serverlessos.quantity agree on every string of tests/data/quantities.yaml.

Each string is sent through the ServerlessProcess schema's CEL rules (isQuantity, and the 10m
CPU / 4Mi memory minimums, see crds/serverlessos.io_serverlessprocesses.yaml) with server-side
dry-run creates: nothing is stored. The API server must refuse "must be a quantity" exactly when
the parser refuses the string, and "must be at least ..." exactly when the parsed quantity is
below the minimum.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from serverlessos.quantity import Quantity, QuantityError

from .conftest import KUBECONFIG, process_manifest

pytestmark = pytest.mark.timeout(180)

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "tests" / "data" / "quantities.yaml").read_text()
)
# field -> (its "not a quantity" message, its minimum's message, the minimum, the other field)
FIELDS: dict[str, tuple[str, str, Quantity, dict[str, str]]] = {
    "cpu": (
        "must be a quantity such as 500m or 2",
        "must be at least 10m",
        Quantity.parse("10m"),
        {"memory": "64Mi"},
    ),
    "memory": (
        "must be a quantity such as 256Mi or 1Gi",
        "must be at least 4Mi",
        Quantity.parse("4Mi"),
        {"cpu": "100m"},
    ),
}


@pytest.fixture(scope="module")
def custom_objects() -> Iterator[client.CustomObjectsApi]:
    api_client = config.new_client_from_config(config_file=KUBECONFIG)
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def _refusals(api: client.CustomObjectsApi, namespace: str, resources: dict[str, str]) -> list[str]:
    """What the API server says against a dry-run create with these resources ([]: accepted)."""
    body = process_manifest("quantity", namespace, command=["sleep", "1"], resources=resources)
    try:
        api.create_namespaced_custom_object(
            "serverlessos.io",
            "v1alpha1",
            namespace,
            "serverlessprocesses",
            body,
            dry_run="All",
            _request_timeout=30,
        )
    except ApiException as error:
        if error.status != 422:
            raise
        status = json.loads(error.body or "{}")
        causes = (status.get("details") or {}).get("causes") or []
        return [f"{c.get('field')}: {c.get('message')}" for c in causes] or [str(status)]
    return []


def _parsed(text: str) -> Quantity | None:
    try:
        return Quantity.parse(text)
    except QuantityError:
        return None


def test_the_api_server_and_the_parser_agree_on_every_quantity(
    custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    disagreements = []
    for case in CASES:
        text = case["text"]
        quantity = _parsed(text)
        assert (quantity is not None) == case["valid"], f"{text!r}: the table and parser differ"
        for field, (not_quantity, too_small, minimum, other) in FIELDS.items():
            refusals = _refusals(custom_objects, namespace, {field: text, **other})
            said = " | ".join(refusals)
            if quantity is None:
                expected = not_quantity
                agrees = bool(refusals) and not_quantity in said and "must be at least" not in said
            elif quantity < minimum:
                expected = too_small
                agrees = bool(refusals) and too_small in said and "must be a quantity" not in said
            else:
                expected = "accepted"
                agrees = not refusals
            agrees = agrees and all(f"spec.resources.{field}" in r for r in refusals)
            if not agrees:
                server = said or "accepted"
                disagreements.append(f"{field}={text!r}: parser expects {expected!r}, got {server}")
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements)
