"""CustomResourceDefinitions generated from the pydantic models in api/.

pydantic writes JSON Schema (with $defs, anyOf-null for optionals, titles);
Kubernetes wants a structural OpenAPI v3 schema (everything inline, types on
every node). `to_structural` bridges the two. `make crds` writes crds/*.yaml;
a test regenerates them and fails on drift.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from . import v1alpha1
from .meta import GROUP, VERSION

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Kind:
    model: type[BaseModel]
    plural: str
    singular: str
    scope: str
    short_names: list[str] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

KINDS = [
    Kind(
        v1alpha1.ServerlessProcess,
        plural="serverlessprocesses",
        singular="serverlessprocess",
        scope="Namespaced",
        short_names=["sp", "sproc"],
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Node", "type": "string", "jsonPath": ".status.node"},
            {"name": "CPU", "type": "string", "jsonPath": ".spec.resources.cpu"},
            {"name": "Memory", "type": "string", "jsonPath": ".spec.resources.memory"},
            {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
            AGE,
        ],
    ),
    Kind(
        v1alpha1.ServerlessNode,
        plural="serverlessnodes",
        singular="serverlessnode",
        scope="Cluster",
        short_names=["snode"],
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
            },
            {"name": "CPU-PSI", "type": "number", "jsonPath": ".status.pressure.cpuSomeAvg10"},
            {"name": "Mem-PSI", "type": "number", "jsonPath": ".status.pressure.memorySomeAvg10"},
            {"name": "CPU-Free", "type": "string", "jsonPath": ".status.pressure.cpuFree"},
            {"name": "Mem-Free", "type": "string", "jsonPath": ".status.pressure.memoryFree"},
            {"name": "Processes", "type": "integer", "jsonPath": ".status.processes"},
            {"name": "Heartbeat", "type": "date", "jsonPath": ".status.lastHeartbeat"},
        ],
    ),
    Kind(
        v1alpha1.ProcessMigration,
        plural="processmigrations",
        singular="processmigration",
        scope="Namespaced",
        short_names=["pmig"],
        columns=[
            {"name": "Process", "type": "string", "jsonPath": ".spec.process"},
            {"name": "Source", "type": "string", "jsonPath": ".status.sourceNode"},
            {"name": "Target", "type": "string", "jsonPath": ".status.targetNode"},
            {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Downtime", "type": "string", "jsonPath": ".status.downtime"},
            AGE,
        ],
    ),
    Kind(
        v1alpha1.ClusterCgroup,
        plural="clustercgroups",
        singular="clustercgroup",
        scope="Namespaced",
        short_names=["ccg"],
        columns=[
            {"name": "CPU", "type": "string", "jsonPath": ".spec.cpu"},
            {"name": "Memory", "type": "string", "jsonPath": ".spec.memory"},
            {"name": "Members", "type": "integer", "jsonPath": ".status.memberCount"},
            {"name": "CPU-Used", "type": "string", "jsonPath": ".status.usage.cpu"},
            {"name": "Waiting", "type": "string", "jsonPath": ".status.waiting"},
            AGE,
        ],
    ),
]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_inline(extra, defs)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "properties":  # names, not schema keywords
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs)
    # Optional[X] is anyOf [X, null]: the field is simply not required.
    any_of = out.get("anyOf")
    if any_of and not out.get("x-kubernetes-int-or-string"):
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            del out["anyOf"]
            out = {**non_null[0], **out}
    if out.get("default", 0) is None:
        del out["default"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["properties"] = {}
    return out


def to_structural(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    structural: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    structural.pop("description", None)
    props = structural["properties"]
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props.pop("metadata", None)  # the API server's (the models read it; it is not ours)
    props["metadata"] = {"type": "object"}
    structural["required"] = [r for r in structural.get("required", []) if r != "status"]
    return structural


def crd(kind: Kind) -> dict[str, Any]:
    name = kind.model.__name__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["serverlessos"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.columns,
                    "schema": {"openAPIV3Schema": to_structural(kind.model)},
                }
            ],
        },
    }


HEADER = "# Generated by `make crds` from operator/serverlessos_operator/api; do not edit.\n"


def render() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {
        f"{GROUP}_{kind.plural}.yaml": HEADER
        + yaml.safe_dump(crd(kind), sort_keys=False, width=100)
        for kind in KINDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "crds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out / name).write_text(text)
        print(args.out / name)


if __name__ == "__main__":
    main()
