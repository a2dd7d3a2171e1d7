"""The operator dials an agent only at one of its core Node's addresses: a ServerlessNode
names its own endpoint, and a compromised agent could name another node's."""

from __future__ import annotations

from serverlessos_operator.nodes.book import NodeBook, endpoint_host
from serverlessos_operator.scheduling.ledger import Ledger

from .fakes import FakeAgents
from .test_process_controllers import agent_status


def book() -> tuple[NodeBook, FakeAgents, list[tuple[str, str]]]:
    agents = FakeAgents([])
    refused: list[tuple[str, str]] = []
    nodes = NodeBook(
        Ledger(),
        agents,  # type: ignore[arg-type]
        check_addresses=True,
        on_refused=lambda node, why: refused.append((node, why)),
    )
    return nodes, agents, refused


def test_endpoint_hosts() -> None:
    assert endpoint_host("10.0.0.1:7420") == "10.0.0.1"
    assert endpoint_host("[fd00::1]:7420") == "fd00::1"
    assert endpoint_host("node-a:7420") == "node-a"


def test_an_endpoint_at_the_nodes_address_is_dialled() -> None:
    nodes, agents, refused = book()
    nodes.upsert_kube_node("a", {}, (), frozenset({"10.0.0.1", "a"}))
    nodes.upsert_agent("a", agent_status("10.0.0.1:7420"))
    assert agents.nodes() == ["a"] and nodes.reachable("a") and not refused


def test_another_nodes_address_is_not_dialled_and_says_why() -> None:
    nodes, agents, refused = book()
    nodes.upsert_kube_node("a", {}, (), frozenset({"10.0.0.1"}))
    nodes.upsert_kube_node("b", {}, (), frozenset({"10.0.0.2"}))
    nodes.upsert_agent("b", agent_status("10.0.0.2:7420"))
    nodes.upsert_agent("a", agent_status("10.0.0.2:7420"))  # a claims b's address
    assert agents.nodes() == ["b"]
    assert not nodes.reachable("a")
    assert nodes.ledger.node("a").ready is False
    assert refused == [
        ("a", "endpoint 10.0.0.2:7420 is not at one of Node a's addresses (10.0.0.1): not dialled")
    ]
    # Put right, it is dialled again.
    nodes.upsert_agent("a", agent_status("10.0.0.1:7420"))
    assert sorted(agents.nodes()) == ["a", "b"] and nodes.reachable("a")


def test_an_agent_heard_before_its_node_waits_for_the_nodes_addresses() -> None:
    nodes, agents, refused = book()
    nodes.upsert_agent("a", agent_status("10.0.0.1:7420"))
    assert agents.nodes() == [] and not refused  # not reported: the Node is not seen yet
    nodes.upsert_kube_node("a", {}, (), frozenset({"10.0.0.1"}))
    assert agents.nodes() == ["a"]
