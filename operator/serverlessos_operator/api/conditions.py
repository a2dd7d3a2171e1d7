"""Conditions with metav1.Condition semantics, on the typed models."""

from __future__ import annotations

from collections.abc import Sequence

from .meta import Condition, ConditionStatus, now


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
) -> list[Condition]:
    """A copy with `type_` set; lastTransitionTime changes only when the status does."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = find(conditions, type_)
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=(
            old.last_transition_time if old is not None and old.status == value else now()
        ),
        observed_generation=(
            generation if generation is not None or old is None else old.observed_generation
        ),
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def wire(conditions: Sequence[Condition]) -> list[dict[str, object]]:
    """As status.conditions is written."""
    return [c.to_wire() for c in conditions]
