"""Live migration's rules, as plain functions: which mode, whether a migration may
start, and what an operator that finds one half done must do.

The migration controller (controller.py) drives agents and writes statuses;
everything it decides is decided here, so tests can check the rules without a cluster.

The safety argument, in one place:
- The source process is frozen (checkpointed, not killed) before the target
  restores, and removed only after the target has confirmed it runs.
- Before that confirmation every failure rolls back: the target drops what it
  received (killing an unconfirmed restore), then the source resumes.
- An operator that restarts finds the phase it recorded *before* each step
  (decide, record, act) and either finishes or rolls back; see `recovery`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ..api.v1alpha1 import (
    MigrationMode,
    MigrationPhase,
    MigrationPolicy,
    MigrationRecord,
    ProcessPhase,
)
from ..nodes.book import CriuSupport

HISTORY = 10  # ServerlessProcess.status.migrations keeps this many


def choose_mode(
    requested: MigrationMode, source: str, src: CriuSupport, target: str, dst: CriuSupport
) -> tuple[MigrationMode | None, str]:
    """(mode, why) or (None, why not). Auto: post-copy where both ends do lazy
    pages, pre-copy where both track dirty pages, else stop-and-copy."""
    for node, support in ((source, src), (target, dst)):
        if not support.usable:
            return None, f"node {node} cannot checkpoint or restore: {support.problem}"
    lazy = src.lazy_pages and dst.lazy_pages
    dirty = src.dirty_tracking and dst.dirty_tracking
    if requested == MigrationMode.AUTO:
        if lazy:
            return MigrationMode.POST_COPY, "both nodes support lazy pages (userfaultfd)"
        if dirty:
            return MigrationMode.PRE_COPY, "both nodes track dirty pages"
        return (
            MigrationMode.STOP_AND_COPY,
            "neither lazy pages nor dirty-page tracking on both nodes",
        )
    if requested == MigrationMode.POST_COPY and not lazy:
        lacking = source if not src.lazy_pages else target
        return None, f"PostCopy needs lazy pages (userfaultfd) on both nodes; {lacking} lacks it"
    if requested == MigrationMode.PRE_COPY and not dirty:
        lacking = source if not src.dirty_tracking else target
        return None, (
            f"PreCopy needs dirty-page tracking (soft-dirty) on both nodes; {lacking} lacks it "
            "(its kernel is built without CONFIG_MEM_SOFT_DIRTY)"
        )
    if requested == MigrationMode.PRE_COPY:
        # Detected and chosen by Auto, but the agent's iterative pre-dump is not built
        # yet (no node here can run it): say so rather than quietly stop-and-copy.
        return None, "PreCopy is not implemented by this version's agents; use Auto"
    return requested, f"{requested} requested"


@dataclass(frozen=True)
class ProcessFacts:
    """What the operator knows of the process a migration names."""

    name: str
    exists: bool
    policy: MigrationPolicy = MigrationPolicy.MANUAL
    phase: ProcessPhase | None = None
    node: str | None = None
    deleting: bool = False
    active_migration: str | None = None  # the name of its active migration, if any


def refusal(process: ProcessFacts, migration: str) -> str | None:
    """Why this migration must not start, or None."""
    name = process.name
    if not process.exists:
        return f"there is no ServerlessProcess {name!r} in this namespace"
    if process.active_migration not in (None, migration):
        return f"{name} already has an active migration, {process.active_migration}; one at a time"
    if process.policy == MigrationPolicy.NEVER:
        return f"{name} has spec.migration.policy Never"
    if process.deleting:
        return f"{name} is being deleted"
    if process.phase != ProcessPhase.RUNNING or not process.node:
        return (
            f"{name} is not running (phase {process.phase or 'Pending'}); "
            "only a running process can migrate"
        )
    return None


class Recovery(enum.StrEnum):
    """What to do with a migration found in an active phase (e.g. after a restart)."""

    START = "start"  # nothing was touched yet: run it from the beginning
    ROLL_BACK = "roll-back"  # the source may be frozen and the target cannot run it
    ASK_TARGET = "ask-target"  # a restore may have happened: commit if it runs there
    COMMIT = "commit"


def recovery(phase: MigrationPhase | None) -> Recovery:
    if phase in (None, MigrationPhase.PENDING, MigrationPhase.SCHEDULING):
        return Recovery.START
    if phase in (MigrationPhase.CHECKPOINTING, MigrationPhase.TRANSFERRING):
        return Recovery.ROLL_BACK  # the target is never told to restore in these phases
    if phase == MigrationPhase.RESTORING:
        return Recovery.ASK_TARGET
    raise ValueError(f"phase {phase!r} is not active")


def format_duration(seconds: float) -> str:
    """What `kubectl get pmig` shows: 87ms, 1.42s, 2m3s."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def parse_duration(text: str) -> float:
    """Seconds in "500ms", "2s", "1m30s" (the API schema admits only such strings)."""
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for match in re.finditer(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m)", text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (e.g. 500ms, 2s, 1m30s)")
    return total


def history(records: list[MigrationRecord], entry: MigrationRecord) -> list[MigrationRecord]:
    """The process's migration history with `entry` added or updated (by name), last 10."""
    kept = [r for r in records if r.name != entry.name]
    return [*kept, entry][-HISTORY:]
