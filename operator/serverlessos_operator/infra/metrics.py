"""Operator metrics (`serverlessos_operator_*`), served on /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from serverlessos.metrics_server import serve_registry

from ..api.v1alpha1 import ProcessPhase

PHASES = tuple(ProcessPhase)


class _Gauges(Collector):
    def __init__(
        self,
        phases: Callable[[], dict[str, int]],
        agents: Callable[[], int],
        pressure: Callable[[], dict[str, float]],
        budgets: Callable[[], list[tuple[str, str, int, int]]],
    ) -> None:
        self.phases = phases
        self.agents = agents
        self.pressure = pressure
        self.budgets = budgets

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
        pressure = GaugeMetricFamily(
            "serverlessos_operator_node_pressure",
            "Each node's pressure as placement and rebalancing see it (percent; absent: stale).",
            labels=["node"],
        )
        for node, value in sorted(self.pressure().items()):
            pressure.add_metric([node], value)
        yield pressure
        budget = GaugeMetricFamily(
            "serverlessos_operator_clustercgroup_cpu_budget_millicores",
            "Each ClusterCgroup's CPU budget.",
            labels=["namespace", "name"],
        )
        granted = GaugeMetricFamily(
            "serverlessos_operator_clustercgroup_cpu_granted_millicores",
            "CPU shares its members hold now (at most the budget).",
            labels=["namespace", "name"],
        )
        for namespace, name, cpu, held in self.budgets():
            budget.add_metric([namespace, name], cpu)
            granted.add_metric([namespace, name], held)
        yield budget
        yield granted


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

        self.rebalance_decisions = Counter(
            "serverlessos_operator_rebalance_decisions",
            "What the rebalancer decided about hot nodes, by outcome (migrate, busy, "
            "nothing-movable, no-target, not-worth, rate-limited).",
            labelnames=["outcome"],
            registry=self.registry,
        )

    def watch(
        self,
        phases: Callable[[], dict[str, int]],
        agents: Callable[[], int],
        pressure: Callable[[], dict[str, float]] = dict,
        budgets: Callable[[], list[tuple[str, str, int, int]]] = list,
    ) -> None:
        self.registry.register(_Gauges(phases, agents, pressure, budgets))

    def serve(self, host: str, port: int) -> int:
        return serve_registry(self.registry, host, port)
