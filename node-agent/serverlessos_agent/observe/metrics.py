"""Prometheus metrics of the agent (`serverlessos_agent_*`), served on /metrics.

Process and node figures are read at scrape time from the process table and the
latest stats sample, on the agent's event loop (the HTTP server runs in its own
thread), so a scrape never sees a half-updated record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from serverlessos.metrics_server import serve_registry

from .. import __version__
from ..records import ProcessRecord, State
from .stats import NodeSample

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class Snapshot:
    records: list[ProcessRecord]
    sample: NodeSample | None
    lease_expiries: int = 0


class AgentCollector(Collector):
    def __init__(
        self,
        node_name: str,
        cgroup_version: str,
        loop: asyncio.AbstractEventLoop,
        snapshot: Callable[[], Snapshot],
    ) -> None:
        self.node_name = node_name
        self.cgroup_version = cgroup_version
        self.loop = loop
        self.snapshot = snapshot

    def _take(self) -> Snapshot:
        async def take() -> Snapshot:
            return self.snapshot()

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(timeout=5)

    def collect(self) -> Iterable[Metric]:
        snap = self._take()
        info = GaugeMetricFamily(
            "serverlessos_agent_info",
            "Agent version, node and cgroup driver.",
            labels=["node", "version", "cgroup_version"],
        )
        info.add_metric([self.node_name, __version__, self.cgroup_version], 1)
        yield info
        yield CounterMetricFamily(
            "serverlessos_agent_lease_expiries",
            "Leased resources (UpdateResources with a lease) that ran out unrenewed and fell back.",
            value=snap.lease_expiries,
        )
        yield from self._processes(snap)
        if snap.sample is not None:
            yield from self._node(snap.sample)

    def _processes(self, snap: Snapshot) -> Iterable[Metric]:
        labels = ["namespace", "name"]
        state = GaugeMetricFamily(
            "serverlessos_agent_process_state",
            "1 for the state each managed process is in.",
            labels=[*labels, "state"],
        )
        restarts = CounterMetricFamily(
            "serverlessos_agent_process_restarts",
            "Times the agent restarted the process.",
            labels=labels,
        )
        cpu_limit = GaugeMetricFamily(
            "serverlessos_agent_process_cpu_limit_cores", "CPU limit (absent: none).", labels=labels
        )
        mem_limit = GaugeMetricFamily(
            "serverlessos_agent_process_memory_limit_bytes",
            "Memory limit (absent: none).",
            labels=labels,
        )
        cpu = CounterMetricFamily(
            "serverlessos_agent_process_cpu_seconds",
            "CPU time used by the process's cgroup.",
            labels=labels,
        )
        throttled = CounterMetricFamily(
            "serverlessos_agent_process_cpu_throttled_seconds",
            "Time the process's cgroup was throttled by its CPU limit.",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "serverlessos_agent_process_memory_bytes",
            "Memory charged to the process's cgroup now.",
            labels=labels,
        )
        peak = GaugeMetricFamily(
            "serverlessos_agent_process_memory_peak_bytes",
            "Highest memory charged to the process's cgroup.",
            labels=labels,
        )
        samples = snap.sample.processes if snap.sample else {}
        for record in snap.records:
            key = [record.ref.namespace, record.ref.name]
            for s in State:
                if s != State.STOPPED:
                    state.add_metric([*key, s.value], 1.0 if record.state == s else 0.0)
            restarts.add_metric(key, record.restarts)
            if record.spec.resources.cpu_millis:
                cpu_limit.add_metric(key, record.spec.resources.cpu_millis / 1000)
            if record.spec.resources.memory_bytes:
                mem_limit.add_metric(key, record.spec.resources.memory_bytes)
            sample = samples.get(record.ref)
            if sample is not None:
                cpu.add_metric(key, sample.cpu_seconds)
                throttled.add_metric(key, sample.cpu_throttled_seconds)
                memory.add_metric(key, sample.memory_current)
                peak.add_metric(key, sample.memory_peak)
        yield from (state, restarts, cpu_limit, mem_limit, cpu, throttled, memory, peak)

    def _node(self, sample: NodeSample) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "serverlessos_agent_node_cpu_capacity_cores",
            "CPUs on the node.",
            value=sample.cpu_capacity_millis / 1000,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_cpu_usage_cores",
            "CPUs busy over the last sampling interval.",
            value=sample.cpu_usage_cores,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_memory_total_bytes",
            "MemTotal, or the node cgroup's memory limit.",
            value=sample.memory_total,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_memory_available_bytes",
            "MemAvailable, or the node cgroup's total minus its working set.",
            value=sample.memory_available,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_memory_used_bytes",
            "Memory in use (the node cgroup's working set with --node-cgroup).",
            value=sample.memory_used,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_network_bytes_per_second",
            "Bytes received plus sent over the last sampling interval (no loopback, no veths).",
            value=sample.network_bytes_per_second,
        )
        yield GaugeMetricFamily(
            "serverlessos_agent_node_network_capacity_bytes_per_second",
            "Sum of the counted interfaces' link speeds (0: unknown).",
            value=sample.network_capacity_bytes_per_second,
        )
        stalled = CounterMetricFamily(
            "serverlessos_agent_node_pressure_stalled_seconds",
            "PSI: time some or all tasks were stalled on the resource (/proc/pressure).",
            labels=["resource", "kind"],
        )
        ratio = GaugeMetricFamily(
            "serverlessos_agent_node_pressure_ratio",
            "PSI: share of wall time stalled, averaged over the window.",
            labels=["resource", "kind", "window"],
        )
        for resource, p in (
            ("cpu", sample.cpu_pressure),
            ("memory", sample.memory_pressure),
            ("io", sample.io_pressure),
        ):
            stalled.add_metric([resource, "some"], p.some_total_us / 1e6)
            stalled.add_metric([resource, "full"], p.full_total_us / 1e6)
            ratio.add_metric([resource, "some", "10s"], p.some_avg10 / 100)
            ratio.add_metric([resource, "some", "60s"], p.some_avg60 / 100)
            ratio.add_metric([resource, "full", "10s"], p.full_avg10 / 100)
            ratio.add_metric([resource, "full", "60s"], p.full_avg60 / 100)
        yield stalled
        yield ratio


class Metrics:
    """The agent's registry; the RPC histogram is observed by the gRPC edge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.rpc_duration = Histogram(
            "serverlessos_agent_rpc_duration_seconds",
            "Time to serve a unary gRPC call, by method and status code.",
            labelnames=["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def serve(self, host: str, port: int) -> int:
        return serve_registry(self.registry, host, port)
