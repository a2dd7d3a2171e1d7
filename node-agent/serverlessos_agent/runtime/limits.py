"""A running process's limits: changing them (UpdateResources) and leases.

A lease holds resources only until it runs out unrenewed; then its fallback
applies (a zero field keeps the current value), never an OOM kill: a memory
fallback below what the process uses now keeps the memory limit. The lease's
clock is in memory only: after an agent restart (or a migration) it starts again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from serverlessos.quantity import format_bytes, format_cpu

from ..cgroup import CgroupDriver
from ..errors import FailedPrecondition
from ..records import Lease, ProcessRecord, Ref, Resources
from ..storage.event_journal import EventType
from .process_table import Live, ProcessTable
from .validation import NodeCapacity, check_lease, check_resources

log = logging.getLogger(__name__)


class Limits:
    """Writes a record's limits to its cgroup, and reads what it uses against them."""

    def __init__(self, driver: CgroupDriver) -> None:
        self._driver = driver

    def apply(self, record: ProcessRecord, resources: Resources) -> None:
        self._driver.set_limits(record.cgroup, resources)
        record.spec = dataclasses.replace(record.spec, resources=resources)

    def memory_in_use(self, record: ProcessRecord) -> int | None:
        """What the current run uses now; None if nothing runs or it cannot be read."""
        if record.run is None:
            return None
        try:
            return self._driver.stats(record.cgroup).memory_current
        except (OSError, ValueError):
            return None


def fallback_after_expiry(
    lease: Lease, current: Resources, used: int | None
) -> tuple[Resources, str]:
    """What a lease that ran out unrenewed falls back to, and the message saying so.
    `used` is the process's memory now (None: unknown), read only when the fallback
    has a memory figure."""
    cpu = lease.fallback.cpu_millis or current.cpu_millis
    memory = lease.fallback.memory_bytes or current.memory_bytes
    notes = []
    if lease.fallback.cpu_millis:
        notes.append(f"cpu fallback {format_cpu(cpu)}")
    if lease.fallback.memory_bytes:
        if used is not None and memory < used:
            notes.append(
                f"memory fallback {format_bytes(memory)} not applied (the process uses "
                f"{format_bytes(used)}), kept at {limit_text(current.memory_bytes)}"
            )
            memory = current.memory_bytes
        else:
            notes.append(f"memory fallback {format_bytes(memory)}")
    message = f"lease expired after {lease.seconds:g}s without renewal: " + (
        ", ".join(notes) or "limits kept (the lease had no fallback)"
    )
    return Resources(cpu, memory), message


class Leases:
    """The lease clocks: armed at creation, adoption and every UpdateResources."""

    def __init__(self, table: ProcessTable, limits: Limits) -> None:
        self._table = table
        self._limits = limits
        self.expiries = 0  # leases that ran out unrenewed, since the agent started

    def arm(self, record: ProcessRecord, live: Live) -> None:
        """(Re)start the record's lease clock, or stop it if it has no lease."""
        live.cancel_lease_timer()
        if record.lease is None:
            record.lease_expires_at = 0.0
            return
        record.lease_expires_at = time.time() + record.lease.seconds
        live.lease_timer = asyncio.get_running_loop().call_later(
            record.lease.seconds, self._expired, record.ref
        )

    def _expired(self, ref: Ref) -> None:
        """Not renewed in time: fall back to the lease's safe values, never to an
        OOM kill (a memory fallback below current use keeps the memory limit)."""
        entry = self._table.entry(ref)
        if entry is None or entry[0].lease is None:
            return
        record, live = entry
        assert record.lease is not None
        live.lease_timer = None
        lease, current = record.lease, record.spec.resources
        used = self._limits.memory_in_use(record) if lease.fallback.memory_bytes else None
        fallback, message = fallback_after_expiry(lease, current, used)
        try:
            self._limits.apply(record, fallback)
        except FailedPrecondition as exc:
            # The kernel may fail to reclaim down to a new memory limit: keep memory.
            try:
                self._limits.apply(record, Resources(fallback.cpu_millis, current.memory_bytes))
                message += f"; memory kept at {limit_text(current.memory_bytes)}: {exc}"
            except FailedPrecondition as again:
                message += f"; applying the fallback failed: {again}"
        record.lease = None
        record.lease_expires_at = 0.0
        self.expiries += 1
        self._table.save(record)
        log.warning("%s: %s", ref, message)
        self._table.emit(record, EventType.RESOURCES_UPDATED, message)


class ResourceUpdates:
    """UpdateResources: new limits, permanent or leased."""

    def __init__(
        self,
        table: ProcessTable,
        limits: Limits,
        leases: Leases,
        capacity: Callable[[], NodeCapacity],
    ) -> None:
        self._table = table
        self._limits = limits
        self._leases = leases
        self._capacity = capacity

    async def update_resources(
        self, ref: Ref, resources: Resources, lease: Lease | None = None
    ) -> ProcessRecord:
        """Set the limits; with a lease, only until it runs out unrenewed. Without a
        lease this is permanent and always written, events included (as before
        leases). A renewal that changes nothing only moves the expiry: the operator
        renews every process every few seconds, so it must cost no write and no event."""
        record = self._table.get(ref)
        live = self._table.live(ref)
        capacity = self._capacity()
        check_resources(resources, capacity)
        if lease is not None:
            check_lease(lease, capacity)
        changed = lease is None or resources != record.spec.resources or lease != record.lease
        if changed:
            used = self._limits.memory_in_use(record)
            if resources.memory_bytes and used is not None and resources.memory_bytes < used:
                raise FailedPrecondition(
                    f"memory limit {format_bytes(resources.memory_bytes)} is below the "
                    f"{format_bytes(used)} the process uses now; lowering it would OOM-kill it"
                )
            self._limits.apply(record, resources)
        had_lease = record.lease is not None
        record.lease = lease
        self._leases.arm(record, live)
        if changed:
            self._table.save(record)
            if lease is not None:
                message = f"leased for {lease.seconds:g}s, then {fallback_text(lease.fallback)}"
            else:
                message = "no longer leased" if had_lease else ""
            self._table.emit(record, EventType.RESOURCES_UPDATED, message)
        return record


def limit_text(value: int) -> str:
    return format_bytes(value) if value else "unlimited"


def fallback_text(fallback: Resources) -> str:
    parts = [f"cpu {format_cpu(fallback.cpu_millis)}"] if fallback.cpu_millis else []
    if fallback.memory_bytes:
        parts.append(f"memory {format_bytes(fallback.memory_bytes)}")
    return "fallback " + ", ".join(parts) if parts else "no fallback (limits kept)"
