"""Live migration's plain code, called directly: the operator's rules (mode, refusals,
restart recovery, durations, history) and the agent's checkpoint stream."""

from __future__ import annotations

import pytest
from serverlessos_operator.api.v1alpha1 import MigrationRecord, ServerlessNodeStatus
from serverlessos_operator.migration.rules import (
    ProcessFacts,
    Recovery,
    choose_mode,
    format_duration,
    history,
    parse_duration,
    recovery,
    refusal,
)
from serverlessos_operator.nodes.book import CriuSupport

LAZY = CriuSupport(usable=True, lazy_pages=True)


PLAIN = CriuSupport(usable=True)


BOTH = CriuSupport(usable=True, lazy_pages=True, dirty_tracking=True)


def criu_of(status: dict[str, object]) -> CriuSupport:
    """As the operator reads it: from a ServerlessNode's status, parsed by the model."""
    parsed = ServerlessNodeStatus.model_validate(status)
    return CriuSupport.from_status(parsed.capabilities.criu if parsed.capabilities else None)


NONE = criu_of({})


def test_auto_prefers_post_copy_then_pre_copy_then_stop_and_copy() -> None:
    assert choose_mode("Auto", "a", LAZY, "b", LAZY)[0] == "PostCopy"
    dirty = CriuSupport(usable=True, dirty_tracking=True)
    assert choose_mode("Auto", "a", dirty, "b", dirty)[0] == "PreCopy"
    assert choose_mode("Auto", "a", LAZY, "b", PLAIN)[0] == "StopAndCopy"


def test_an_explicit_mode_the_nodes_cannot_do_is_refused_with_the_node_named() -> None:
    mode, why = choose_mode("PostCopy", "a", LAZY, "b", PLAIN)
    assert mode is None and "b lacks it" in why
    mode, why = choose_mode("PreCopy", "a", LAZY, "b", LAZY)
    assert mode is None and "dirty-page tracking" in why and "a lacks it" in why
    assert choose_mode("StopAndCopy", "a", PLAIN, "b", PLAIN)[0] == "StopAndCopy"


def test_nodes_without_criu_cannot_take_part() -> None:
    mode, why = choose_mode("Auto", "a", LAZY, "b", NONE)
    assert mode is None and "node b" in why and "no CRIU" in why


def test_criu_support_is_read_from_the_serverless_node_status() -> None:
    status = {
        "capabilities": {"criu": {"usable": True, "version": "4.2.1", "features": ["lazy-pages"]}}
    }
    assert criu_of(status) == CriuSupport(usable=True, lazy_pages=True)
    broken = {"capabilities": {"criu": {"usable": False, "problem": "criu check failed: x"}}}
    assert criu_of(broken).problem == "criu check failed: x"


def facts(**kw: object) -> ProcessFacts:
    base: dict[str, object] = {"name": "p", "exists": True, "phase": "Running", "node": "a"}
    return ProcessFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_refusals_say_why() -> None:
    assert refusal(facts(), "m1") is None
    assert "no ServerlessProcess" in (refusal(facts(exists=False), "m1") or "")
    assert "already has an active migration, m0" in (
        refusal(facts(active_migration="m0"), "m1") or ""
    )
    assert refusal(facts(active_migration="m1"), "m1") is None  # its own claim
    assert "policy Never" in (refusal(facts(policy="Never"), "m1") or "")
    assert "not running" in (refusal(facts(phase="Pending", node=None), "m1") or "")
    assert "being deleted" in (refusal(facts(deleting=True), "m1") or "")


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        (None, Recovery.START),
        ("Pending", Recovery.START),
        ("Scheduling", Recovery.START),
        ("Checkpointing", Recovery.ROLL_BACK),
        ("Transferring", Recovery.ROLL_BACK),
        ("Restoring", Recovery.ASK_TARGET),
    ],
)
def test_an_operator_restarted_mid_migration_knows_what_to_do(
    phase: str | None, action: Recovery
) -> None:
    assert recovery(phase) == action


def test_finished_migrations_are_not_recovered() -> None:
    with pytest.raises(ValueError):
        recovery("Succeeded")


def test_durations() -> None:
    assert format_duration(0.0874) == "87ms"
    assert format_duration(1.4234) == "1.42s"
    assert format_duration(123) == "2m3s"
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90
    for bad in ("", "5", "5h", "s5", "1s x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_history_keeps_the_last_ten_and_updates_by_name() -> None:
    records: list[MigrationRecord] = []
    for i in range(12):
        records = history(records, MigrationRecord(name=f"m{i}", phase="Succeeded"))
    assert [r.name for r in records] == [f"m{i}" for i in range(2, 12)]
    records = history(records, MigrationRecord(name="m11", phase="RolledBack"))
    assert len(records) == 10 and records[-1] == MigrationRecord(name="m11", phase="RolledBack")
