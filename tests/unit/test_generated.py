"""Generated code matches its source: `make proto` was run after the last .proto change."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from serverlessos_operator.api.crdgen import render

ROOT = Path(__file__).resolve().parents[2]


def test_grpc_stubs_have_not_drifted(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "hack" / "gen_proto.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = gen
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path)
    checked_in = ROOT / "node-agent"
    assert fresh, "the generator produced nothing"
    stale = [
        str(path.relative_to(tmp_path))
        for path in fresh
        if not (checked_in / path.relative_to(tmp_path)).exists()
        or (checked_in / path.relative_to(tmp_path)).read_bytes() != path.read_bytes()
    ]
    assert not stale, f"run `make proto`: these stubs differ from agent.proto: {stale}"
    extra = {
        str(p.relative_to(checked_in))
        for package in gen.GENERATED
        for p in (checked_in / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } - {str(p.relative_to(tmp_path)) for p in fresh}
    assert not extra, f"generated files with no source any more: {extra}"


def test_crds_have_not_drifted() -> None:
    rendered = render()
    on_disk = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert on_disk == set(rendered), "run `make crds`"
    for name, text in rendered.items():
        assert (ROOT / "crds" / name).read_text() == text, f"run `make crds`: {name} drifted"


def test_chart_carries_the_generated_crds() -> None:
    chart = ROOT / "charts" / "serverlessos" / "crds"
    assert {p.name for p in chart.glob("*.yaml")} == set(render()), "run hack/sync-chart-crds.sh"
    for name, text in render().items():
        assert (chart / name).read_text() == text, f"run hack/sync-chart-crds.sh: {name} drifted"
