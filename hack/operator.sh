#!/usr/bin/env bash
# The operator as a local process against the local cluster (what `make up` runs).
#
#   hack/operator.sh start | stop | kill9 | status
#
# It manages the agent DaemonSet like in a real install (the DaemonSet's pods land
# on the kwok nodes and are shown Running by kwok; the real agents are the
# processes hack/agents.sh starts in network namespaces).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${SERVERLESSOS_LOCAL:-$REPO/.local}"
PIDFILE="$LOCAL/operator.pid"
LOG="$LOCAL/operator.log"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# The local nodes share one machine: on cgroup v1 their PSI is the machine's, the
# same on every node, so it tells nodes apart not at all and only lifts them all
# toward the watermarks. Here it weighs a quarter (Helm default: 1).
LOCAL_PLACEMENT='{"psiWeight": 0.25}'

start() {
  if running; then return 0; fi
  mkdir -p "$LOCAL"
  KUBECONFIG="$LOCAL/kubeconfig" \
  SERVERLESSOS_NAMESPACE=serverlessos-system \
  SERVERLESSOS_AGENT_IMAGE=serverlessos/agent:dev \
  SERVERLESSOS_AGENT_TOLERATIONS='[{"key":"kwok.x-k8s.io/node","operator":"Exists","effect":"NoSchedule"}]' \
  SERVERLESSOS_HEARTBEAT_GRACE="${SERVERLESSOS_HEARTBEAT_GRACE:-20}" \
  SERVERLESSOS_RETRY_INTERVAL="${SERVERLESSOS_RETRY_INTERVAL:-2}" \
  SERVERLESSOS_METRICS_PORT="${SERVERLESSOS_METRICS_PORT:-8081}" \
  SERVERLESSOS_PLACEMENT="${SERVERLESSOS_PLACEMENT:-$LOCAL_PLACEMENT}" \
  SERVERLESSOS_TLS="${SERVERLESSOS_TLS:-$([[ ${SERVERLESSOS_AGENT_TLS:-1} == 1 ]] && echo true || echo false)}" \
    setsid "$REPO/.venv/bin/serverlessos-operator" --liveness=http://127.0.0.1:8080/healthz \
    >>"$LOG" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 60))
  until curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
    if ! running; then tail -n 30 "$LOG" >&2; echo "error: the operator exited; log: $LOG" >&2; exit 1; fi
    (( SECONDS < deadline )) || { echo "error: operator not healthy in 60s; log: $LOG" >&2; exit 1; }
    sleep 0.2
  done
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do running || break; sleep 0.1; done
    if running; then kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill9) if running; then kill -9 "$(cat "$PIDFILE")"; fi; rm -f "$PIDFILE" ;;
  status) if running; then echo "operator: running (pid $(cat "$PIDFILE"))"; else echo "operator: stopped"; fi ;;
  *) echo "usage: $0 start|stop|kill9|status" >&2; exit 2 ;;
esac
