#!/usr/bin/env bash
# `make down`: remove everything `make up` made (processes, network namespaces,
# cgroups, files). Caches in ~/.cache/serverlessos stay. Safe to run twice.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${SERVERLESSOS_LOCAL:-$REPO/.local}"

"$REPO/hack/operator.sh" stop
"$REPO/hack/agents.sh" down
if [[ -x "$REPO/hack/cluster.sh" ]]; then "$REPO/hack/cluster.sh" down; fi
rm -rf "$LOCAL"
echo "down: operator, agents, network namespaces, cgroups, control plane and $LOCAL removed" >&2
