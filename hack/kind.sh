#!/usr/bin/env bash
# ServerlessOS on a kind cluster, for a workstation WITH Docker.
#
# NOTE: CI machines (and the project's development machines) have no Docker;
# this script is not exercised there. The Docker-free local cluster is
# `make up` (hack/up.sh). What this does:
#
#   1. checks for docker, kind, kubectl and helm
#   2. creates the kind cluster "$KIND_CLUSTER" (default serverlessos) unless it exists
#   3. builds serverlessos/operator:$TAG and serverlessos/agent:$TAG
#      (Dockerfile.operator, Dockerfile.agent) and `kind load`s them
#   4. installs charts/serverlessos into serverlessos-system (helm upgrade --install)
#   5. waits for the operator's rollout and prints the next steps
#
#   hack/kind.sh [EXTRA HELM ARGS...]    e.g. hack/kind.sh --set serviceMonitor.enabled=true
#
# Environment: KIND_CLUSTER (default serverlessos), TAG (default dev),
# KIND_NODE_IMAGE (kind's --image, default kind's own), NAMESPACE (default
# serverlessos-system), ROLLOUT_TIMEOUT (default 180s).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIND_CLUSTER="${KIND_CLUSTER:-serverlessos}"
TAG="${TAG:-dev}"
NAMESPACE="${NAMESPACE:-serverlessos-system}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-180s}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
OPERATOR_IMAGE="serverlessos/operator:$TAG"
AGENT_IMAGE="serverlessos/agent:$TAG"
RELEASE=serverlessos

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"
}

need docker "install Docker (https://docs.docker.com/get-docker/); without Docker use 'make up'"
need kind "install kind (go install sigs.k8s.io/kind@latest)"
need kubectl "install kubectl"
need helm "install helm v3 (go install helm.sh/helm/v3/cmd/helm@latest, or hack/install-tools.sh)"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is it running? may you use it?)"

# 1. The cluster.
if kind get clusters 2>/dev/null | grep -qx -- "$KIND_CLUSTER"; then
  say "kind cluster $KIND_CLUSTER exists"
else
  say "creating kind cluster $KIND_CLUSTER"
  create=(kind create cluster --name "$KIND_CLUSTER" --wait 120s)
  if [[ -n "$KIND_NODE_IMAGE" ]]; then
    create+=(--image "$KIND_NODE_IMAGE")
  fi
  "${create[@]}"
fi
CONTEXT="kind-$KIND_CLUSTER"
kctl() { kubectl --context "$CONTEXT" "$@"; }

# 2. The images.
revision="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
build() {
  local dockerfile=$1 image=$2
  say "building $image ($dockerfile)"
  docker build -f "$REPO/$dockerfile" -t "$image" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$created" "$REPO"
  say "loading $image into kind cluster $KIND_CLUSTER"
  kind load docker-image "$image" --name "$KIND_CLUSTER"
}
build Dockerfile.operator "$OPERATOR_IMAGE"
build Dockerfile.agent "$AGENT_IMAGE"

# 3. The chart. CRDs in the chart's crds/ are installed by Helm only once and
# never upgraded, so apply them first: a re-run picks up changed CRDs.
say "applying CRDs"
kctl apply --server-side --force-conflicts -f "$REPO/charts/serverlessos/crds/"
kctl wait --for condition=established --timeout=60s \
  crd/serverlessprocesses.serverlessos.io crd/serverlessnodes.serverlessos.io crd/processmigrations.serverlessos.io

upgrade=false
if helm status "$RELEASE" --kube-context "$CONTEXT" -n "$NAMESPACE" >/dev/null 2>&1; then
  upgrade=true
fi
say "installing the chart (release $RELEASE in $NAMESPACE)"
# pullPolicy IfNotPresent: the images exist only inside the kind nodes.
helm upgrade --install "$RELEASE" "$REPO/charts/serverlessos" \
  --kube-context "$CONTEXT" \
  -n "$NAMESPACE" --create-namespace \
  --set operator.image.tag="$TAG" \
  --set agent.image.tag="$TAG" \
  --set operator.image.pullPolicy=IfNotPresent \
  --set agent.image.pullPolicy=IfNotPresent \
  "$@"

# A re-run with the same tag builds new images under the same name: restart so
# that the running pods pick them up.
if $upgrade; then
  kctl -n "$NAMESPACE" rollout restart "deployment/$RELEASE-operator" >/dev/null
fi

# 4. Wait.
say "waiting for the operator (timeout $ROLLOUT_TIMEOUT)"
kctl -n "$NAMESPACE" rollout status "deployment/$RELEASE-operator" --timeout "$ROLLOUT_TIMEOUT"

say "waiting for the operator to create the agent DaemonSet"
deadline=$((SECONDS + 60))
until kctl -n "$NAMESPACE" get daemonset serverlessos-agent >/dev/null 2>&1; do
  if (( SECONDS >= deadline )); then
    printf 'warning: no serverlessos-agent DaemonSet yet (agent.enabled=false?); operator log:\n' >&2
    kctl -n "$NAMESPACE" logs "deployment/$RELEASE-operator" --tail 30 >&2 || true
    break
  fi
  sleep 2
done
if kctl -n "$NAMESPACE" get daemonset serverlessos-agent >/dev/null 2>&1; then
  if $upgrade; then
    kctl -n "$NAMESPACE" rollout restart daemonset/serverlessos-agent >/dev/null
  fi
  kctl -n "$NAMESPACE" rollout status daemonset/serverlessos-agent --timeout "$ROLLOUT_TIMEOUT" ||
    printf 'warning: the agents are not all ready yet: kubectl --context %s -n %s get pods\n' \
      "$CONTEXT" "$NAMESPACE" >&2
fi

cat <<EOF_NEXT

ServerlessOS is running on kind cluster "$KIND_CLUSTER" (kubectl context $CONTEXT).

Next steps:
  kubectl config use-context $CONTEXT
  kubectl get serverlessnodes                        # one per node, once its agent registered
  kubectl apply -f $REPO/examples/process.yaml       # or see: helm -n $NAMESPACE get notes $RELEASE
  kubectl get serverlessprocesses -A
  kubectl -n $NAMESPACE logs deploy/$RELEASE-operator -f

Rebuild and redeploy after a change: hack/kind.sh
Remove everything:                   kind delete cluster --name $KIND_CLUSTER
EOF_NEXT
