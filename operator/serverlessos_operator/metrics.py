"""Operator metrics (`serverlessos_operator_*`), served on /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from serverlessos_agent.metrics import serve_registry

PHASES = ("Pending", "Unschedulable", "Scheduled", "Running", "Succeeded", "Failed")


class _Gauges(Collector):
    def __init__(self, phases: Callable[[], dict[str, int]], agents: Callable[[], int]) -> None:
        self.phases = phases
        self.agents = agents

    def collect(self) -> Iterable[Metric]:
        counts = self.phases()
        family = GaugeMetricFamily(
            "serverlessos_operator_processes", "ServerlessProcesses by phase.", labels=["phase"]
        )
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family
        yield GaugeMetricFamily(
            "serverlessos_operator_agents", "Node agents the operator follows.", value=self.agents()
        )


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.placements = Counter(
            "serverlessos_operator_placements",
            "Placement decisions, by result (placed or unschedulable).",
            labelnames=["result"],
            registry=self.registry,
        )
        self.migrations = Counter(
            "serverlessos_operator_migrations",
            "Finished ProcessMigrations, by mode and phase (Succeeded, Failed, RolledBack).",
            labelnames=["mode", "phase"],
            registry=self.registry,
        )
        self.migration_downtime = Histogram(
            "serverlessos_operator_migration_downtime_seconds",
            "From freezing on the source to running on the target, by mode.",
            labelnames=["mode"],
            buckets=(0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )

    def watch(self, phases: Callable[[], dict[str, int]], agents: Callable[[], int]) -> None:
        self.registry.register(_Gauges(phases, agents))

    def serve(self, host: str, port: int) -> int:
        return serve_registry(self.registry, host, port)
