"""The project's import graph, checked: `python hack/import_graph.py` prints which
package of each wing imports which, and fails on an import cycle (between modules,
or between the subpackages of a wing), on a wing importing the other wing, or on a
class longer than the house rule allows. tests/unit/test_layout.py runs the same
checks.

Every import counts, those under `if TYPE_CHECKING:` included: a cycle hidden from
the interpreter is still one for the reader.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# package -> its directory's parent; generated code is left out.
PACKAGES = {
    "serverlessos": ROOT / "node-agent",
    "serverlessos_agent": ROOT / "node-agent",
    "serverlessos_operator": ROOT / "operator",
}
GENERATED = ("serverlessos.agent", "serverlessos.criu")
# Who may import whom: the wings share code only through `serverlessos`.
ALLOWED = {
    "serverlessos": {"serverlessos"},
    "serverlessos_agent": {"serverlessos", "serverlessos_agent"},
    "serverlessos_operator": {"serverlessos", "serverlessos_operator"},
}
MAX_CLASS_LINES = 300


@dataclass
class Graph:
    imports: dict[str, set[str]] = field(default_factory=dict)  # module -> modules
    classes: dict[str, int] = field(default_factory=dict)  # module.Class -> lines


def _modules() -> Iterator[tuple[str, Path]]:
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not name.startswith(GENERATED):
                yield name, path


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def build() -> Graph:
    graph = Graph()
    known = dict(_modules())
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node)
                targets.add(source)
                # `from . import x` / `from .pkg import mod`: x may be a module itself.
                targets.update(
                    f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known
                )
            elif isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                graph.classes[f"{module}.{node.name}"] = lines
        ours = {t for t in targets if t.split(".")[0] in PACKAGES and t in known}
        ours.discard(module)
        graph.imports[module] = ours
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def subpackage(module: str) -> str:
    """A wing's subpackage (`serverlessos_operator.processes`), or the module itself
    for the wing's top-level modules (`serverlessos_operator.app`)."""
    return ".".join(module.split(".")[:2])


def package_edges(graph: Graph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph.imports.items():
        src = subpackage(module)
        # A package's __init__ importing its own modules is not a dependency on itself.
        edges.setdefault(src, set()).update(subpackage(t) for t in targets)
    for src, targets in edges.items():
        targets.discard(src)
    return edges


def problems(graph: Graph) -> list[str]:
    out = [f"import cycle between modules: {' <-> '.join(c)}" for c in cycles(graph.imports)]
    out += [
        f"import cycle between subpackages: {' <-> '.join(c)}" for c in cycles(package_edges(graph))
    ]
    for module, targets in sorted(graph.imports.items()):
        wing = module.split(".")[0]
        for target in sorted(targets):
            if target.split(".")[0] not in ALLOWED[wing]:
                out.append(f"{module} imports {target}: the wings share code only via serverlessos")
    out += [
        f"class {name} is {lines} lines (house rule: at most about {MAX_CLASS_LINES})"
        for name, lines in sorted(graph.classes.items())
        if lines > MAX_CLASS_LINES
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modules", action="store_true", help="print module edges too")
    args = parser.parse_args()
    graph = build()
    shown = graph.imports if args.modules else package_edges(graph)
    for src in sorted(shown):
        print(f"{src} -> {', '.join(sorted(shown[src])) or '-'}")
    found = problems(graph)
    for problem in found:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    largest = max(graph.classes.items(), key=lambda kv: kv[1])
    print(
        f"\n{len(graph.imports)} modules, {len(graph.classes)} classes (largest: {largest[0]}, "
        f"{largest[1]} lines); {'no cycles' if not found else f'{len(found)} problems'}"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
