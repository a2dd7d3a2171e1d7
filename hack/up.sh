#!/usr/bin/env bash
# `make up`: a real local ServerlessOS cluster, from a fresh machine.
#
# Python venv -> tools (control plane built from Go modules, etcd, kwok, helm;
# cached by version in ~/.cache/serverlessos) -> control plane with N kwok nodes
# -> CRDs -> one real agent per node in its own network namespace -> the
# operator -> examples/. A warm second run takes seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${SERVERLESSOS_LOCAL:-$REPO/.local}"
NODES="${NODES:-3}"
LOGS="$LOCAL/logs"
mkdir -p "$LOGS"

step() {
  local name=$1; shift
  local log="$LOGS/$name.log" started=$SECONDS
  printf '==> %-12s ' "$name" >&2
  if "$@" >"$log" 2>&1; then
    printf 'ok (%ds)\n' $((SECONDS - started)) >&2
  else
    printf 'FAILED\n' >&2
    tail -n 25 "$log" >&2
    printf '\nerror: step "%s" failed; full log: %s\n' "$name" "$log" >&2
    exit 1
  fi
}

venv() { make -C "$REPO" --no-print-directory venv; }
tools() {
  "$REPO/hack/install-tools.sh" > "$LOCAL/tools-bin"
  "$REPO/hack/install-criu.sh"  # agents detect it and publish it in their ServerlessNodes
  "$REPO/hack/install-redis.sh" >/dev/null  # the live-migration e2e moves a Redis server
}
cluster() {
  # Agents live in network namespaces and reach the API server over the bridge.
  SERVERLESSOS_APISERVER_BIND=0.0.0.0 SERVERLESSOS_APISERVER_SANS=IP:10.77.0.1 \
    "$REPO/hack/cluster.sh" up --nodes "$NODES"
}
crds() {
  kubectl apply --server-side -f "$REPO/crds/"
  kubectl wait --for condition=established --timeout=60s crd/serverlessprocesses.serverlessos.io \
    crd/serverlessnodes.serverlessos.io crd/processmigrations.serverlessos.io
  kubectl create namespace serverlessos-system --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n serverlessos-system create serviceaccount serverlessos-agent --dry-run=client -o yaml \
    | kubectl apply -f -
  # The agents' permissions, as the chart grants them (what a node-bound agent token may
  # do), and the admission rule that keeps each agent to its own node's ServerlessNode.
  helm template serverlessos "$REPO/charts/serverlessos" -n serverlessos-system \
    --show-only templates/rbac-agent.yaml --show-only templates/admission-agent.yaml \
    --show-only templates/admission-processes.yaml \
    | kubectl apply -f -
}
logapi() {
  # The log API behind the API server, as the chart makes it (APIService, the log
  # reader role); its Service has no selector here: the operator runs on the host,
  # reached at the bridge address.
  helm template serverlessos "$REPO/charts/serverlessos" -n serverlessos-system \
    --show-only templates/apiservice.yaml | kubectl apply -f -
  kubectl apply -f - <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: serverlessos-operator, namespace: serverlessos-system}
spec:
  ports: [{name: logs, port: 443, targetPort: 8443, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: serverlessos-operator, namespace: serverlessos-system}
subsets:
  - addresses: [{ip: 10.77.0.1}]
    ports: [{name: logs, port: 8443, protocol: TCP}]
YAML
}
agents() { "$REPO/hack/agents.sh" up --nodes "$NODES" --kubeconfig "$KUBECONFIG"; }
operator() { "$REPO/hack/operator.sh" start; }
registered() {
  local deadline=$((SECONDS + 60)) count
  while true; do
    count=$(kubectl get serverlessnodes -o name | wc -l)
    [[ $count -ge $NODES ]] && break
    (( SECONDS < deadline )) || { kubectl get serverlessnodes; return 1; }
    sleep 0.5
  done
  kubectl get serverlessnodes
}
examples() { kubectl apply -f "$REPO/examples/"; }

step venv venv
step tools tools
BIN="$(cat "$LOCAL/tools-bin")"
export PATH="$BIN:$REPO/.venv/bin:$PATH"
export KUBECONFIG="$LOCAL/kubeconfig"
step cluster cluster
step crds crds
step logapi logapi
# The operator first: it keeps the cluster CA and signs the agents' certificates.
step operator operator
step agents agents
step nodes registered
step examples examples

cat >&2 <<EOT

ServerlessOS is up: $NODES kwok nodes, each with a real agent; the operator runs locally.

  export KUBECONFIG=$KUBECONFIG
  export PATH=$BIN:$REPO/.venv/bin:\$PATH
  kubectl get serverlessnodes
  kubectl get sp                      # the example process: examples/process.yaml
  kubectl sos logs -f counter         # through the API server
  kubectl sos get -A

Logs: $LOGS (steps), $LOCAL/operator.log, $LOCAL/agents/*/agent.log, $LOCAL/cluster/.
Tear down with: make down
EOT
