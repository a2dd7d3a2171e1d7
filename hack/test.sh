#!/usr/bin/env bash
# `make test`: the whole suite, the one CI runs. Unit and integration tests
# (real agents, cgroups, processes) and e2e tests against a real local cluster,
# which this brings up (hack/up.sh: cold, it builds the control plane; warm, it
# takes seconds) and, if it was not already up, takes down again afterwards.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${SERVERLESSOS_LOCAL:-$REPO/.local}"

was_up=false
if [[ -f "$LOCAL/operator.pid" ]] && kill -0 "$(cat "$LOCAL/operator.pid")" 2>/dev/null; then
  was_up=true
fi
if ! $was_up; then
  trap '"$REPO/hack/down.sh" >/dev/null 2>&1' EXIT
fi
"$REPO/hack/install-promtool.sh" >/dev/null || { echo "error: installing promtool failed" >&2; exit 1; }
"$REPO/hack/up.sh" || exit 1
"$REPO/.venv/bin/python" -m pytest "$@"
