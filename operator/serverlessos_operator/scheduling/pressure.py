"""How pressed a node is: one number from its agent's last report, and what-ifs.

A node's pressure is its most stressed resource, in percent (dominant-resource
style, so a node full on memory is not made to look fine by idle CPUs):

    cpu     = 100 * cpu used / capacity      + PSI cpu some avg10
    memory  = 100 * memory used / capacity   + PSI memory some avg10
    io      = PSI io some avg10
    network = 100 * bytes/s / link capacity  (when the link speed is known)

Utilisation says how full a node is, PSI says whether its work already waits
(contention that utilisation hides, e.g. a saturated memory bus or disk). Both
come from usage, not from requests: requests are what the capacity filter checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Signals:
    """One report of a node's agent. `at` is on the operator's monotonic clock."""

    at: float
    cpu_psi: float = 0.0  # PSI some avg10, percent
    memory_psi: float = 0.0
    io_psi: float = 0.0
    cpu_used_millis: float = 0.0
    memory_used_bytes: float = 0.0
    network_bytes_per_second: float = 0.0
    network_capacity_bytes_per_second: float = 0.0  # 0 = unknown


@dataclass(frozen=True)
class PressureModel:
    psi_weight: float = 1.0  # points of pressure per percent of stall

    def pressure(
        self,
        signals: Signals,
        cpu_capacity_millis: float,
        memory_capacity_bytes: float,
        extra_cpu_millis: float = 0.0,
        extra_memory_bytes: float = 0.0,
    ) -> float:
        """The node's pressure with `extra` load added (negative: taken away)."""
        cpu = (
            100.0
            * max(0.0, signals.cpu_used_millis + extra_cpu_millis)
            / max(1.0, cpu_capacity_millis)
        )
        memory = (
            100.0
            * max(0.0, signals.memory_used_bytes + extra_memory_bytes)
            / max(1.0, memory_capacity_bytes)
        )
        worst = max(
            cpu + self.psi_weight * signals.cpu_psi,
            memory + self.psi_weight * signals.memory_psi,
            self.psi_weight * signals.io_psi,
        )
        if signals.network_capacity_bytes_per_second > 0:
            worst = max(
                worst,
                100.0
                * signals.network_bytes_per_second
                / signals.network_capacity_bytes_per_second,
            )
        return worst
