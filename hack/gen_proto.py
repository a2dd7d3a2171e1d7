"""Generate the agent's gRPC stubs (Python + mypy stubs) from its .proto files.

`make proto` writes them into node-agent/; the drift test writes them into a
temporary directory and compares, so the checked-in stubs always match.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "node-agent" / "proto"
PROTOS = [
    "serverlessos/agent/v1alpha1/agent.proto",
    "serverlessos/criu/rpc.proto",  # the part of CRIU's RPC protocol the agent speaks
]
# Packages that only hold generated code get an __init__.py of their own (the
# `serverlessos` package itself is the hand-written shared package around them).
PACKAGES = [
    "serverlessos/agent",
    "serverlessos/agent/v1alpha1",
    "serverlessos/criu",
]
GENERATED = ["serverlessos/agent", "serverlessos/criu"]  # directories holding only generated code
INIT_TEXT = '"""Generated protobuf and gRPC code of the node agent (see hack/gen_proto.py)."""\n'


def _plugin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        raise SystemExit(f"{name} not found: install the dev dependencies (make venv)")
    return found


def generate(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in PACKAGES:
        (out_dir / package / "__init__.py").write_text(INIT_TEXT)
    return sorted(p for package in GENERATED for p in (out_dir / package).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "node-agent")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    main()
