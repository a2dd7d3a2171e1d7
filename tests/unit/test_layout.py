"""The house's rules, checked on the code (hack/import_graph.py prints the graph)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "hack" / "import_graph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_no_wing_reaching_into_the_other_and_no_huge_classes() -> None:
    tool = _tool()
    graph = tool.build()
    assert len(graph.imports) > 50, "the graph found too few modules: is the layout moved?"
    assert tool.problems(graph) == []


def test_the_checker_sees_cycles_and_wing_crossings() -> None:
    """The checks above must be able to fail."""
    tool = _tool()
    assert tool.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = tool.Graph(
        imports={
            "serverlessos_operator.x.m": {"serverlessos_agent.runtime.n"},
            "serverlessos_operator.y.m": {"serverlessos_operator.z.m"},
            "serverlessos_operator.z.m": {"serverlessos_operator.y.k"},
            "serverlessos_operator.y.k": set(),
            "serverlessos_agent.runtime.n": set(),
        },
        classes={"serverlessos_agent.runtime.n.Big": 400},
    )
    found = tool.problems(graph)
    assert any("subpackages" in p and "serverlessos_operator.y" in p for p in found)
    assert any("share code only via serverlessos" in p for p in found)
    assert any("Big is 400 lines" in p for p in found)


def test_only_the_cluster_room_of_the_agent_imports_kubernetes() -> None:
    """The agent is Kubernetes-agnostic: its optional parts that talk to an API server
    (its ServerlessNode, its certificate) live in cluster/, loaded only when it has one."""
    tool = _tool()
    offenders = []
    for module, path in tool._modules():
        if not module.startswith("serverlessos_agent"):
            continue
        text = path.read_text()
        if "import kubernetes" in text or "from kubernetes" in text:
            offenders.append(module)
    assert offenders and all(m.startswith("serverlessos_agent.cluster.") for m in offenders), (
        offenders
    )
