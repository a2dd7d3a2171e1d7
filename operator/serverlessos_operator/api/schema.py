"""Reusable field types with the OpenAPI details Kubernetes needs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "serverlessos.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def object_ref(kind: str, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """Enough of one of our objects to post Kubernetes Events about it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
    }


# int-or-string, as Kubernetes quantities are: `memory: 256Mi` or `memory: 1073741824`.
_QUANTITY: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
}


def quantity_schema(what: str, example: str, minimum: str) -> dict[str, Any]:
    """A quantity field validated by the API server with a message a person can act on."""
    return {
        **_QUANTITY,
        "description": f"{what} as a Kubernetes quantity, e.g. {example}.",
        "x-kubernetes-validations": [
            {
                "rule": "isQuantity(string(self))",
                "message": f"must be a quantity such as {example}",
            },
            {
                "rule": (
                    f"!isQuantity(string(self)) || "
                    f"quantity(string(self)).compareTo(quantity('{minimum}')) >= 0"
                ),
                "message": f"must be at least {minimum}",
            },
        ],
    }


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields rejected in tests."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(max_length=316)
    status: str = Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)


CONDITIONS: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
