#!/usr/bin/env bash
# Real node agents for the local cluster's kwok nodes, one per network namespace.
#
#   hack/agents.sh up --nodes N --kubeconfig FILE   start agents for kwok-node-0..N-1
#   hack/agents.sh down                             stop them, remove namespaces and cgroups
#   hack/agents.sh status
#
# Each agent stands in for its node's DaemonSet pod: it runs in netns sos-<node>
# with its own address on the bridge sos-br0 (10.77.0.10+i), is bound to the
# node's name, and registers the node's ServerlessNode through the API server
# (reached at the bridge address 10.77.0.1). Its processes are real, in cgroups
# under serverlessos/<node>, and that subtree is the node (--node-cgroup): its CPU
# and memory figures are the subtree's, so load put there (processes outside the
# platform go in serverlessos/<node>/_system/..., which the agent never touches)
# makes that node, and only it, busy. PSI stays machine-wide on cgroup v1.
#
# Each agent also gets its own mount namespace in which its node's directory is
# bind-mounted at one path, $NODE_STATE (default /var/lib/serverlessos-agent, the DaemonSet's
# hostPath), as on real nodes.
#
# As a DaemonSet pod's, each agent's credentials are the agents' ServiceAccount with a
# token bound to its Node (kubectl create token --bound-object-kind Node): it may write
# only that node's ServerlessNode (the chart's admission policy) and gets only that
# node's certificate from the operator (--tls-bootstrap), then serves mutual TLS. The
# operator must run first (it signs the certificates). SERVERLESSOS_AGENT_TLS=0: the
# admin's kubeconfig and a plaintext port (--insecure), for debugging.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${SERVERLESSOS_LOCAL:-$REPO/.local}"
DIR="$LOCAL/agents"
BRIDGE=sos-br0
SUBNET=10.77.0
GATEWAY="$SUBNET.1"
AGENT="$REPO/.venv/bin/serverlessos-agent"
CACHE="${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}"
CRIU="$CACHE/bin/criu"  # hack/install-criu.sh
CGROUP_BASE=serverlessos
NODE_STATE="${SERVERLESSOS_NODE_STATE:-/var/lib/serverlessos-agent}"
TLS="${SERVERLESSOS_AGENT_TLS:-1}"

say() { printf '  %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A live (not zombie) agent process with that pid.
alive() {
  local pid=$1
  [[ -r "/proc/$pid/stat" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]] || return 1
  grep -qa serverlessos-agent "/proc/$pid/cmdline"
}

node_name() { printf 'kwok-node-%d' "$1"; }
node_ip() { printf '%s.%d' "$SUBNET" $((10 + $1)); }

ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

ensure_netns() {
  local i=$1 ns veth
  ns="sos-$(node_name "$i")"
  veth="sosv$i"
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
  fi
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$GATEWAY"
  fi
}

agent_kubeconfig() {
  # The admin kubeconfig, pointed at the bridge address the namespaces can reach.
  local admin=$1 out=$2 server port
  server=$(grep -m1 'server:' "$admin" | awk '{print $2}')
  port=${server##*:}
  sed "s#server: .*#server: https://$GATEWAY:$port#" "$admin" > "$out"
}

# node_kubeconfig NODE ADMIN OUT: the agents' ServiceAccount with a token bound to NODE.
node_kubeconfig() {
  local node=$1 admin=$2 out=$3 token
  token=$(kubectl --kubeconfig "$admin" create token serverlessos-agent -n serverlessos-system \
    --bound-object-kind Node --bound-object-name "$node" --duration 48h)
  "$REPO/.venv/bin/python" - "$admin" "$out" "$token" <<'PY2'
import json, sys, yaml
admin, out, token = sys.argv[1:]
cluster = yaml.safe_load(open(admin))["clusters"][0]["cluster"]
json.dump({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "agent", "user": {"token": token}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "agent"}}],
           "current-context": "c"}, open(out, "w"))
PY2
  chmod 600 "$out"
}

start_agent() {
  local i=$1 kubeconfig=$2 node ns ip state security
  node=$(node_name "$i")
  ns="sos-$node"
  ip=$(node_ip "$i")
  state="$DIR/$node"
  mkdir -p "$state"
  if [[ -f "$state/agent.pid" ]] && alive "$(cat "$state/agent.pid")"; then
    return 0
  fi
  rm -f "$state/state/agent.json"  # left by a killed agent; its presence means ready
  mkdir -p "$state/state" "$NODE_STATE"
  if [[ $TLS == 1 ]]; then
    node_kubeconfig "$node" "$kubeconfig" "$state/kubeconfig"
    kubeconfig="$state/kubeconfig"
    security=(--tls-dir "$NODE_STATE/tls" --tls-bootstrap)
  else
    security=(--insecure)
  fi
  # nsenter, not "ip netns exec": that remounts /sys, hiding the cgroup hierarchies.
  # unshare --mount: a private mount namespace with this node's dir at $NODE_STATE.
  # shellcheck disable=SC2016
  nsenter --net="/var/run/netns/$ns" unshare --mount --propagation private \
    sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$state/state" "$NODE_STATE" \
    setsid "$AGENT" serve \
    --node-name "$node" \
    --listen "$ip:7420" --metrics-listen "$ip:7421" \
    --state-dir "$NODE_STATE" \
    --cgroup-root "$CGROUP_BASE/$node" --node-cgroup "$CGROUP_BASE/$node" \
    --kubeconfig "$kubeconfig" --heartbeat-interval 5s \
    --criu "$CRIU" "${security[@]}" \
    --process-ro-path "$CACHE" \
    >>"$state/agent.log" 2>&1 </dev/null &
  echo $! > "$state/agent.pid"
}

# The kwok Node's address is the agent's (as a real node's kubelet reports the address
# its DaemonSet pod listens on): the operator dials an agent only at one of its Node's
# addresses. kwok keeps addresses it finds.
node_address() {
  local i=$1 kubeconfig=$2 node
  node=$(node_name "$i")
  kubectl --kubeconfig "$kubeconfig" patch node "$node" --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$(node_ip "$i")\"},{\"type\":\"Hostname\",\"address\":\"$node\"}]}}" \
    >/dev/null
}

wait_ready() {
  local i=$1 node state deadline
  node=$(node_name "$i")
  state="$DIR/$node"
  deadline=$((SECONDS + 60))  # with TLS, until the operator signed its certificate
  until [[ -f "$state/state/agent.json" ]]; do
    if ! alive "$(cat "$state/agent.pid")"; then
      tail -n 20 "$state/agent.log" >&2
      die "agent for $node exited; log: $state/agent.log"
    fi
    (( SECONDS < deadline )) || die "agent for $node not ready in 60s; log: $state/agent.log"
    sleep 0.1
  done
}

up() {
  local nodes=3 kubeconfig="$LOCAL/kubeconfig"
  while [[ $# -gt 0 ]]; do
    case $1 in
      --nodes) nodes=$2; shift 2 ;;
      --kubeconfig) kubeconfig=$2; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -x "$AGENT" ]] || die "$AGENT not found: run 'make venv' first"
  [[ -f "$kubeconfig" ]] || die "no kubeconfig at $kubeconfig: start the cluster first"
  mkdir -p "$DIR"
  ensure_bridge
  agent_kubeconfig "$kubeconfig" "$DIR/kubeconfig"
  for ((i = 0; i < nodes; i++)); do
    ensure_netns "$i"
    node_address "$i" "$kubeconfig"
    start_agent "$i" "$DIR/kubeconfig"
  done
  for ((i = 0; i < nodes; i++)); do
    wait_ready "$i"
    say "agent $(node_name "$i") at $(node_ip "$i"):7420 (netns sos-$(node_name "$i"))"
  done
}

kill_cgroup_tree() {
  local base
  for base in /sys/fs/cgroup/*/"$CGROUP_BASE" /sys/fs/cgroup/"$CGROUP_BASE"; do
    [[ -d "$base" ]] || continue
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      local pids
      pids=$(find "$base" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' ')
      [[ -z "${pids// /}" ]] && break
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      sleep 0.2
    done
    find "$base" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  local pidfile ns
  if [[ -d "$DIR" ]]; then
    for pidfile in "$DIR"/*/agent.pid; do
      [[ -f "$pidfile" ]] || continue
      kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
  fi
  kill_cgroup_tree  # the agents' processes and shims
  for ns in $(ip netns list | awk '/^sos-/{print $1}'); do
    ip netns del "$ns"
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$DIR"
}

status() {
  local pidfile
  for pidfile in "$DIR"/*/agent.pid; do
    [[ -f "$pidfile" ]] || { echo "no agents"; return 0; }
    if alive "$(cat "$pidfile")"; then
      echo "$(basename "$(dirname "$pidfile")"): running"
    else
      echo "$(basename "$(dirname "$pidfile")"): stopped"
    fi
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [--nodes N] [--kubeconfig FILE] | down | status" >&2; exit 2 ;;
esac
