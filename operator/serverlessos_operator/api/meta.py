"""What every kind of ours shares: the group and version, the model base, object
metadata, conditions, and quantity fields with the OpenAPI details Kubernetes needs."""

from __future__ import annotations

import datetime
import enum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from serverlessos.quantity import Quantity, QuantityError

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


def now() -> str:
    """RFC 3339, seconds (metav1.Time)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python. Unknown fields are ignored: the
    API server prunes them, and a newer agent's status must not break an older operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        """As the API server stores it (camelCase, unset optionals left out)."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


def describe(error: ValidationError, limit: int = 5) -> str:
    """What the models refused, by field, as a person reads it:
    "spec.resources.cpu: 'lots' is not a quantity (...)"."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "the object"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class ObjectMeta(Model):
    """The parts of metav1.ObjectMeta the operator reads (the CRD leaves metadata to
    the API server, so none of this is part of the generated schema)."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None
    creation_timestamp: str | None = None


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    reason: str = Field(max_length=1024)
    message: str = Field(default="", max_length=32768)

    @property
    def true(self) -> bool:
        return self.status == ConditionStatus.TRUE


CONDITIONS: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def quantity_schema(what: str, example: str, minimum: str) -> dict[str, Any]:
    """A quantity field validated by the API server with a message a person can act on.
    int-or-string, as Kubernetes quantities are: `memory: 256Mi` or `memory: 1073741824`."""
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
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


def _quantity(value: object) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a quantity (a string such as 500m or 256Mi)")
    try:
        return Quantity.parse(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _reported_quantity(value: object) -> Quantity:
    """A quantity an agent or the operator wrote into a status; empty means zero."""
    return Quantity.parse("0") if value in ("", None) else _quantity(value)


# Quantity fields are `Annotated[Quantity, QUANTITY_VALIDATOR, QUANTITY_SERIALIZER,
# WithJsonSchema(quantity_schema(...))]`: parsed exactly as the API server's
# resource.Quantity, written back in its canonical form.
QUANTITY_VALIDATOR = PlainValidator(_quantity)
QUANTITY_SERIALIZER = PlainSerializer(str, return_type=str)
# Quantities written into a status by our own components: a plain string in the schema.
REPORTED_QUANTITY_VALIDATOR = PlainValidator(_reported_quantity)
