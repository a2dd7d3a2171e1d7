"""The operator's books on nodes: where each agent is, what it can do, whether it is
heard from; and the ledger entries placement reads, kept in step with them.

Only nodes with an agent (a ServerlessNode with an endpoint) are placement's
candidates. A node whose agent stops heartbeating past the grace period is *lost*
(see processes/node_loss.py for what happens to its processes).

With `check_addresses` the operator dials an agent only at an address its core Node
lists (status.addresses): a ServerlessNode names its endpoint itself, and an agent that
names another node's address, or one of its own choosing, is not dialled there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..api.v1alpha1 import Criu, ServerlessNodeStatus
from ..infra.agents import AgentPool
from ..scheduling.constraints import Taint
from ..scheduling.ledger import Ledger


@dataclass(frozen=True)
class CriuSupport:
    """What a node's agent published in ServerlessNode.status.capabilities.criu."""

    usable: bool = False
    lazy_pages: bool = False  # post-copy (userfaultfd)
    dirty_tracking: bool = False  # pre-copy (soft-dirty)
    problem: str = ""

    @classmethod
    def from_status(cls, criu: Criu | None) -> CriuSupport:
        if criu is None:
            return cls(problem="no CRIU on the node")
        return cls(
            usable=criu.usable,
            lazy_pages="lazy-pages" in criu.features,
            dirty_tracking="dirty-tracking" in criu.features,
            problem=criu.problem or ("" if criu.usable else "criu check failed"),
        )


@dataclass
class NodeInfo:
    name: str
    endpoint: str = ""
    cpu_millis: int = 0
    memory_bytes: int = 0
    heartbeat: str = ""  # the agent's lastHeartbeat, as written (the agent's clock)
    seen: float = 0.0  # our monotonic clock when it last changed (clocks may disagree)
    agent_ready: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    lost: bool = False
    criu: CriuSupport = field(default_factory=CriuSupport)
    addresses: frozenset[str] = frozenset()  # its core Node's status.addresses
    refused: str = ""  # why its endpoint is not dialled ("" = it is)


def endpoint_host(endpoint: str) -> str:
    """10.0.0.1:7420 -> 10.0.0.1, [fd00::1]:7420 -> fd00::1."""
    host = endpoint.rpartition(":")[0] or endpoint
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class NodeBook:
    def __init__(
        self,
        ledger: Ledger,
        agents: AgentPool,
        *,
        check_addresses: bool = False,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.agents = agents
        self.check_addresses = check_addresses
        self.on_refused = on_refused  # (node, why): an endpoint is not dialled
        self._nodes: dict[str, NodeInfo] = {}

    def get(self, name: str | None) -> NodeInfo | None:
        return self._nodes.get(name) if name else None

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(list(self._nodes.values()))

    def lost(self, name: str) -> bool:
        """Unknown or lost: nothing should wait for its agent any more."""
        node = self._nodes.get(name)
        return node is None or node.lost

    def reachable(self, name: str | None) -> bool:
        node = self.get(name)
        return node is not None and bool(node.endpoint) and not node.lost and not node.refused

    # ----- fed by watches --------------------------------------------------

    def upsert_agent(self, name: str, status: ServerlessNodeStatus) -> NodeInfo:
        """A ServerlessNode's status, as its agent last wrote it."""
        node = self._nodes.setdefault(name, NodeInfo(name))
        node.endpoint = status.endpoint
        allocatable = status.allocatable
        node.cpu_millis = allocatable.cpu.milli_value() if allocatable else 0
        node.memory_bytes = allocatable.memory.value() if allocatable else 0
        beat = status.last_heartbeat or ""
        if beat and beat != node.heartbeat:
            node.heartbeat, node.seen = beat, time.monotonic()
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        node.agent_ready = ready is not None and ready.true
        node.criu = CriuSupport.from_status(
            status.capabilities.criu if status.capabilities else None
        )
        self._dial(node)
        self.sync_ledger(node)
        return node

    def upsert_kube_node(
        self,
        name: str,
        labels: dict[str, str],
        taints: tuple[Taint, ...],
        addresses: frozenset[str] = frozenset(),
    ) -> None:
        node = self._nodes.setdefault(name, NodeInfo(name))
        node.labels, node.taints = labels, taints
        if addresses != node.addresses:
            node.addresses = addresses
            self._dial(node)
        self.sync_ledger(node)

    def _dial(self, node: NodeInfo) -> None:
        """Follow the node's agent at its endpoint, if that is one of its Node's addresses."""
        if not node.endpoint:
            return
        why = ""
        if self.check_addresses and endpoint_host(node.endpoint) not in node.addresses:
            listed = ", ".join(sorted(node.addresses)) or "none yet"
            why = (
                f"endpoint {node.endpoint} is not at one of Node {node.name}'s addresses "
                f"({listed}): not dialled"
            )
        if why:
            if why != node.refused and node.addresses and self.on_refused is not None:
                self.on_refused(node.name, why)
            node.refused = why
            self.agents.remove(node.name)
            return
        node.refused = ""
        self.agents.set_endpoint(node.name, node.endpoint)

    def remove(self, name: str) -> None:
        """Its agent is gone for good (its ServerlessNode was deleted)."""
        self._nodes.pop(name, None)
        self.ledger.remove(name)
        self.agents.remove(name)

    def set_lost(self, node: NodeInfo, lost: bool) -> None:
        node.lost = lost
        self.sync_ledger(node)

    def sync_ledger(self, node: NodeInfo) -> None:
        """Only nodes with an agent are in the ledger (placement's candidates)."""
        if not node.endpoint:
            return
        entry = self.ledger.node(node.name)
        entry.cpu_millis, entry.memory_bytes = node.cpu_millis, node.memory_bytes
        entry.ready = node.agent_ready and not node.lost and not node.refused
        entry.labels, entry.taints = node.labels, node.taints
