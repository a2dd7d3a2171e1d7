"""The operator's books on nodes: where each agent is, what it can do, whether it is
heard from; and the ledger entries placement reads, kept in step with them.

Only nodes with an agent (a ServerlessNode with an endpoint) are placement's
candidates. A node whose agent stops heartbeating past the grace period is *lost*
(see processes/node_loss.py for what happens to its processes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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


class NodeBook:
    def __init__(self, ledger: Ledger, agents: AgentPool) -> None:
        self.ledger = ledger
        self.agents = agents
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
        return node is not None and bool(node.endpoint) and not node.lost

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
        if node.endpoint:
            self.agents.set_endpoint(name, node.endpoint)
        self.sync_ledger(node)
        return node

    def upsert_kube_node(
        self, name: str, labels: dict[str, str], taints: tuple[Taint, ...]
    ) -> None:
        node = self._nodes.setdefault(name, NodeInfo(name))
        node.labels, node.taints = labels, taints
        self.sync_ledger(node)

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
        entry.ready = node.agent_ready and not node.lost
        entry.labels, entry.taints = node.labels, node.taints
