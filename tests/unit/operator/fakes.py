"""In-memory stand-ins for the Kubernetes API and the node agents, for unit tests of
the operator's controllers without a cluster.

They keep only what the controllers read back (merged status patches, created
objects, Events, the agents' processes) and let a test inject a failure for one
object: faults (a bug, a malformed answer) that a real cluster cannot be made to
produce on demand. The same code paths run against a real API server and real
agents in e2e/.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_operator.api.v1alpha1 import ServerlessProcess
from serverlessos_operator.infra.agents import AgentUnavailable
from serverlessos_operator.processes.book import ProcessBook, ProcessInfo


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeKube:
    """Status writes, ProcessMigration creation, Events and lists."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name)
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []  # (name, type, reason, message)
        self.created: list[dict[str, Any]] = []
        self.lists: dict[str, list[dict[str, Any]]] = {}
        self.fail_status: set[tuple[str, str]] = set()  # (ns, name) whose writes raise
        self.fail_create: set[str] = set()  # process names whose migrations cannot be made
        self.log: list[str] = []  # writes and agent calls, in order
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}  # (ns, name) -> data
        self.config_maps: dict[tuple[str, str], dict[str, bytes]] = {}

    async def _patch(self, plural: str, ns: str, name: str, status: dict[str, Any]) -> bool:
        if (ns, name) in self.fail_status:
            raise RuntimeError(f"injected: the API server refuses writes to {ns}/{name}")
        self.status.setdefault((plural, ns, name), {}).update(status)
        self.writes.append((plural, ns, name, status))
        self.log.append(f"patch {plural} {name} {sorted(status)}")
        return True

    async def patch_process_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        return await self._patch("processes", ns, name, status)

    async def patch_migration_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        return await self._patch("migrations", ns, name, status)

    async def patch_cgroup_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        return await self._patch("cgroups", ns, name, status)

    async def create_migration(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        process = body["spec"]["process"]
        if process in self.fail_create:
            raise RuntimeError(f"injected: cannot create a migration of {process}")
        created = {**body, "metadata": {**body["metadata"], "name": f"m{len(self.created)}"}}
        self.created.append(created)
        return created

    async def post_event(self, involved: dict[str, Any], type_: str, reason: str, msg: str) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, msg))

    async def read_secret(self, ns: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get((ns, name))

    async def read_config_map(self, ns: str, name: str) -> dict[str, bytes] | None:
        return self.config_maps.get((ns, name))

    async def list_processes(self) -> list[dict[str, Any]]:
        return self.lists.get("processes", [])

    async def list_cgroups(self) -> list[dict[str, Any]]:
        return self.lists.get("cgroups", [])

    async def list_serverless_nodes(self) -> list[dict[str, Any]]:
        return self.lists.get("nodes", [])

    async def list_migrations(self) -> list[dict[str, Any]]:
        return self.lists.get("migrations", [])

    def process_status(self, name: str, ns: str = "ns") -> dict[str, Any]:
        return self.status.get(("processes", ns, name), {})

    def reasons(self, name: str) -> list[str]:
        return [reason for who, _, reason, _ in self.events if who == name]


class Events:
    """An EventSink that hands Events to FakeKube at once (no background tasks)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def post(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.kube.events.append((involved["metadata"]["name"], type_, reason, message))


class FakeAgent:
    """One node's agent: the RPCs the operator's controllers call."""

    def __init__(self, node: str, log: list[str]) -> None:
        self.node = node
        self.log = log
        self.processes: dict[tuple[str, str], pb.Process] = {}
        self.pids = itertools.count(100)
        self.fail: dict[str, Exception] = {}  # process name (or "*stats") -> raised
        self.refuse: dict[str, grpc.aio.AioRpcError] = {}  # process name -> gRPC refusal
        self.stats = pb.NodeStats(node_name=node)
        self.updates: list[pb.UpdateResourcesRequest] = []

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]
        if name in self.refuse:
            raise self.refuse[name]

    async def StartProcess(self, request: pb.StartProcessRequest, timeout: float) -> pb.Process:
        spec = request.spec
        self.log.append(f"start {spec.name} on {self.node}")
        self._check(spec.name)
        key = (spec.owner.namespace, spec.name)
        if key in self.processes:
            raise rpc_error(grpc.StatusCode.ALREADY_EXISTS, f"{spec.name} exists")
        process = pb.Process(spec=spec, state=pb.PROCESS_STATE_RUNNING, pid=next(self.pids))
        if request.HasField("lease"):
            process.lease.CopyFrom(request.lease)
        self.processes[key] = process
        return process

    async def GetProcess(self, request: pb.GetProcessRequest, timeout: float) -> pb.Process:
        key = (request.ref.namespace, request.ref.name)
        if key not in self.processes:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"no process {key[1]}")
        return self.processes[key]

    async def StopProcess(self, request: pb.StopProcessRequest, timeout: float) -> pb.Process:
        self.log.append(f"stop {request.ref.name} on {self.node}")
        key = (request.ref.namespace, request.ref.name)
        if key not in self.processes:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"no process {key[1]}")
        process = pb.Process()
        process.CopyFrom(self.processes.pop(key))
        process.state = pb.PROCESS_STATE_STOPPED
        return process

    async def UpdateResources(
        self, request: pb.UpdateResourcesRequest, timeout: float
    ) -> pb.Process:
        self._check(request.ref.name)
        self.updates.append(request)
        process = self.processes[(request.ref.namespace, request.ref.name)]
        process.spec.resources.CopyFrom(request.resources)
        return process

    async def GetNodeStats(self, request: pb.GetNodeStatsRequest, timeout: float) -> pb.NodeStats:
        self._check("*stats")
        return self.stats


class FakeAgents:
    """The AgentPool's surface: a stub per node, the nodes followed, resyncs."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.agents: dict[str, FakeAgent] = {}
        self.unreachable: set[str] = set()
        self.resynced: list[str] = []

    def add(self, node: str) -> FakeAgent:
        self.agents[node] = FakeAgent(node, self.log)
        return self.agents[node]

    def stub(self, node: str) -> FakeAgent:
        if node not in self.agents or node in self.unreachable:
            raise AgentUnavailable(f"no agent endpoint known for node {node}")
        return self.agents[node]

    def nodes(self) -> list[str]:
        return list(self.agents)

    def set_endpoint(self, node: str, endpoint: str) -> None:
        self.agents.setdefault(node, FakeAgent(node, self.log))

    def resync(self, node: str) -> None:
        self.resynced.append(node)

    def remove(self, node: str) -> None:
        self.agents.pop(node, None)


def process(
    name: str,
    *,
    ns: str = "ns",
    uid: str | None = None,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> ServerlessProcess:
    return ServerlessProcess.model_validate(
        {
            "metadata": {
                "namespace": ns,
                "name": name,
                "uid": uid or f"uid-{name}",
                "generation": 1,
                "labels": labels or {},
            },
            "spec": spec or {"command": ["sleep", "1000"], "resources": {"cpu": "100m"}},
            **({"status": status} if status else {}),
        }
    )


def admit(book: ProcessBook, *objs: ServerlessProcess) -> list[ProcessInfo]:
    return [book.upsert(obj) for obj in objs]


def run(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(work())
