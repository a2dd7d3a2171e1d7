#!/usr/bin/env bash
#
# hack/install-tools.sh - install the tools of the local Kubernetes control
# plane (hack/cluster.sh) into a private cache, versioned, never inside the
# work tree:
#
#   $CACHE/kubernetes-$KUBE_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#       built from Go modules: a generated wrapper module that requires
#       k8s.io/kubernetes $KUBE_VERSION and replaces each staging module
#       (the `k8s.io/... v0.0.0` requirements of k8s.io/kubernetes's go.mod)
#       with its published v0.Y.Z tag. A cold build takes many minutes.
#   $CACHE/kwok-$KWOK_VERSION/bin/kwok            go install sigs.k8s.io/kwok/cmd/kwok
#   $CACHE/helm-$HELM_VERSION/bin/helm            go install helm.sh/helm/v3/cmd/helm
#   $CACHE/etcd-$ETCD_VERSION/usr/bin/{etcd,etcdctl}
#       Debian trixie's etcd-server and etcd-client (3.5.x)
#   $CACHE/bin/<name> -> the above
#
# where CACHE=${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}. Prints only
# "$CACHE/bin" on stdout; progress goes to stderr and each step's output to
# $CACHE/logs/install-tools-<step>.log. A warm run only checks the binaries.
#
# Environment: SERVERLESSOS_CACHE; KUBE_VERSION, KWOK_VERSION, HELM_VERSION
# (a v3 tag, or "latest" for the newest v3.x on the Go module proxy),
# ETCD_VERSION (a Debian version of etcd-server in ETCD_DEBIAN_SUITE; default:
# the installed one, else the suite's current one), ETCD_DEBIAN_SUITE
# (default trixie); the Go toolchain's own (GOPROXY, GOFLAGS, ...). Go's
# module and build caches stay where `go env` says, so rebuilds are fast.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
ETCD_DEBIAN_SUITE=${ETCD_DEBIAN_SUITE:-trixie}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=hack/lib/debian-pkg.sh
. "$here/lib/debian-pkg.sh"

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() {
    printf 'install-tools: error: %s\n' "$*" >&2
    exit 1
}

cache=$(debian_pkg_cache_dir) || die "cannot set up the cache directory"
logs=$cache/logs
mkdir -p "$logs" "$cache/bin" || die "cannot create $logs or $cache/bin"

# step NAME COMMAND [ARG...]: run COMMAND with its output in
# $logs/install-tools-NAME.log; on failure say which step failed, show the
# end of its log and exit.
step() {
    local name=$1 logfile=$logs/install-tools-$1.log start rc=0
    shift
    start=$SECONDS
    log "step $name: $* (log: $logfile)"
    "$@" >"$logfile" 2>&1 </dev/null || rc=$?
    if ((rc != 0)); then
        printf 'install-tools: --- last lines of %s ---\n' "$logfile" >&2
        tail -n 25 "$logfile" | sed 's/^/install-tools:   /' >&2
        die "step '$name' failed (exit $rc); full log: $logfile"
    fi
    log "step $name: done in $((SECONDS - start))s"
}

# version_line BINARY ARG...: first line of BINARY's version output, or fail.
version_line() {
    local bin=$1 out
    shift
    [[ -x $bin ]] || return 1
    out=$("$bin" "$@" 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    printf '%s\n' "$out" | head -n 1
}

# check_version BINARY EXPECTED ARG...: BINARY runs and prints EXPECTED.
check_version() {
    local bin=$1 want=$2 out
    shift 2
    out=$(version_line "$bin" "$@") || die "'$bin $*' failed"
    [[ $out == *"$want"* ]] || die "'$bin $*' printed '$out', expected '$want'"
    printf '%s\n' "$out"
}

# new_tmp NAME: a fresh temporary directory in the cache (same filesystem as
# the destination, so the final mv is atomic); removed on exit.
tmp_dirs=()
cleanup() {
    local d
    for d in "${tmp_dirs[@]}"; do
        [[ -z $d ]] || rm -rf "$d"
    done
}
trap cleanup EXIT
new_tmp() {
    local d
    d=$(mktemp -d "$cache/.$1.XXXXXX") || die "cannot create a temporary directory in $cache"
    tmp_dirs+=("$d")
    printf '%s\n' "$d"
}

# finish TMP DEST: mark TMP complete and move it to DEST. An incomplete
# leftover (interrupted run) is replaced; a complete one installed meanwhile
# by a concurrent run is kept.
finish() {
    local tmp=$1 dest=$2
    touch "$tmp/.complete"
    chmod 755 "$tmp"
    if [[ -e $dest && ! -f $dest/.complete ]]; then
        rm -rf "$dest"
    fi
    if ! mv -T "$tmp" "$dest" 2>/dev/null; then
        [[ -f $dest/.complete ]] || die "cannot move $tmp to $dest"
    fi
}

# link NAME TARGET: point $cache/bin/NAME at TARGET (atomically).
link() {
    local link=$cache/bin/$1 target=$2
    if [[ $(readlink "$link" 2>/dev/null) != "$target" ]]; then
        if ! ln -sfn "$target" "$link.tmp.$$" || ! mv -Tf "$link.tmp.$$" "$link"; then
            rm -f "$link.tmp.$$"
            die "cannot update the symlink $link"
        fi
    fi
}

need_go() {
    command -v go >/dev/null 2>&1 || die "the Go toolchain ('go') is not on PATH"
}

# ---------------------------------------------------------------------------
# Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl

[[ $KUBE_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "KUBE_VERSION must look like v1.Y.Z, not '$KUBE_VERSION'"
kube_minor=${BASH_REMATCH[1]}
staging_version=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
kube_dest=$cache/kubernetes-$KUBE_VERSION
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# write_kube_wrapper DIR: the wrapper module's go.mod.
write_kube_wrapper() {
    local dir=$1 json gomod go_line godebug staging mod
    json=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") || return 1
    gomod=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    [[ -n $gomod && -f $gomod ]] || {
        printf '%s\n' "$json"
        echo "cannot find k8s.io/kubernetes@$KUBE_VERSION's go.mod in the output above"
        return 1
    }
    # The staging modules: required as `k8s.io/NAME v0.0.0` (and replaced by
    # ./staging/src/k8s.io/NAME, which the module zip does not contain).
    staging=$(sed -n 's/^[[:space:]]*\(k8s\.io\/[^[:space:]]*\) v0\.0\.0\([[:space:]].*\)\{0,1\}$/\1/p' "$gomod" | sort -u)
    [[ -n $staging ]] || {
        echo "no 'k8s.io/... v0.0.0' requirements in $gomod"
        return 1
    }
    # Same language version and GODEBUG defaults as upstream's own builds.
    go_line=$(grep -m1 '^go [0-9]' "$gomod" || echo "go 1.24.0")
    godebug=$(grep '^godebug ' "$gomod" || :)
    {
        echo "// Generated by hack/install-tools.sh: builds k8s.io/kubernetes $KUBE_VERSION."
        echo "module serverlessos.local/kubernetes-build"
        echo
        echo "$go_line"
        [[ -z $godebug ]] || printf '\n%s\n' "$godebug"
        echo
        echo "require k8s.io/kubernetes $KUBE_VERSION"
        echo
        echo "replace ("
        for mod in $staging; do
            printf '\t%s => %s %s\n' "$mod" "$mod" "$staging_version"
        done
        echo ")"
    } >"$dir/go.mod"
    echo "staging modules replaced with $staging_version:" "${staging//$'\n'/ }"
    cat "$dir/go.mod"
}

build_kube() {
    local dir=$1 pkgs=() bin ldflags key
    ldflags="-s -w"
    # Both version packages, as upstream's hack/lib/version.sh does:
    # component-base for the servers, client-go for kubectl's client version.
    for key in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $key.gitVersion=$KUBE_VERSION -X $key.gitMajor=1 -X $key.gitMinor=$kube_minor"
        ldflags+=" -X $key.gitTreeState=clean -X $key.buildDate=1970-01-01T00:00:00Z"
    done
    for bin in "${kube_bins[@]}"; do
        pkgs+=("k8s.io/kubernetes/cmd/$bin")
    done
    mkdir -p "$dir/bin"
    (
        cd "$dir/src" &&
            CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
                go build -v -trimpath -ldflags "$ldflags" -o "$dir/bin/" "${pkgs[@]}"
    )
}

kube_ok() {
    local bin
    [[ -f $kube_dest/.complete ]] || return 1
    for bin in "${kube_bins[@]}"; do
        [[ -x $kube_dest/bin/$bin ]] || return 1
    done
}

if ! kube_ok; then
    need_go
    log "building Kubernetes $KUBE_VERSION (${kube_bins[*]}) into $kube_dest; a cold build takes many minutes"
    tmp=$(new_tmp "kubernetes-$KUBE_VERSION")
    mkdir -p "$tmp/src"
    step kubernetes-module write_kube_wrapper "$tmp/src"
    step kubernetes-build build_kube "$tmp"
    cp "$tmp/src/go.mod" "$tmp/src/go.sum" "$tmp/" 2>/dev/null || :
    rm -rf "$tmp/src"
    for bin in kube-apiserver kube-controller-manager kube-scheduler; do
        check_version "$tmp/bin/$bin" "Kubernetes $KUBE_VERSION" --version >/dev/null
    done
    check_version "$tmp/bin/kubectl" "Client Version: $KUBE_VERSION" version --client >/dev/null
    finish "$tmp" "$kube_dest"
fi

# ---------------------------------------------------------------------------
# kwok

kwok_dest=$cache/kwok-$KWOK_VERSION
if [[ ! -f $kwok_dest/.complete || ! -x $kwok_dest/bin/kwok ]]; then
    need_go
    log "installing kwok $KWOK_VERSION into $kwok_dest"
    tmp=$(new_tmp "kwok-$KWOK_VERSION")
    step kwok env GOBIN="$tmp/bin" CGO_ENABLED=0 \
        go install -v -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    check_version "$tmp/bin/kwok" "${KWOK_VERSION#v}" --version >/dev/null
    finish "$tmp" "$kwok_dest"
fi

# ---------------------------------------------------------------------------
# helm (v3)

if [[ $HELM_VERSION == latest ]]; then
    need_go
    HELM_VERSION=$(go list -m -versions helm.sh/helm/v3 | tr ' ' '\n' | grep -E '^v3\.[0-9]+\.[0-9]+$' | sort -V | tail -n 1) ||
        die "cannot list helm.sh/helm/v3's versions"
    log "latest helm v3 on the module proxy: $HELM_VERSION"
fi
[[ $HELM_VERSION =~ ^v3\.[0-9]+\.[0-9]+ ]] || die "HELM_VERSION must be a v3 tag or 'latest', not '$HELM_VERSION'"
helm_dest=$cache/helm-$HELM_VERSION

install_helm() {
    local bin=$1 json gomod cg major minor ldflags
    json=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION") || return 1
    gomod=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    # Like helm's Makefile: the default .Capabilities.KubeVersion follows the
    # client-go it is built with (v0.Y.Z -> 1.Y).
    cg=$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n 1)
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    if [[ -n $cg ]]; then
        major=1 minor=$cg
        ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
        ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    fi
    GOBIN=$bin CGO_ENABLED=0 go install -v -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

if [[ ! -f $helm_dest/.complete || ! -x $helm_dest/bin/helm ]]; then
    need_go
    log "installing helm $HELM_VERSION into $helm_dest"
    tmp=$(new_tmp "helm-$HELM_VERSION")
    step helm install_helm "$tmp/bin"
    check_version "$tmp/bin/helm" "$HELM_VERSION" version --short >/dev/null
    finish "$tmp" "$helm_dest"
fi

# ---------------------------------------------------------------------------
# etcd (Debian)

if [[ -z ${ETCD_VERSION:-} ]]; then
    # Keep the installed version (no apt look-up on warm runs) unless there is
    # none yet.
    current=$(readlink "$cache/bin/etcd" 2>/dev/null || :)
    if [[ $current =~ ^"$cache"/etcd-([^/]+)/usr/bin/etcd$ && -f $cache/etcd-${BASH_REMATCH[1]}/.complete && -x $current ]]; then
        ETCD_VERSION=${BASH_REMATCH[1]}
    else
        ETCD_VERSION=$(debian_pkg_version "$ETCD_DEBIAN_SUITE" etcd-server) ||
            die "cannot determine the etcd-server version in $ETCD_DEBIAN_SUITE"
    fi
fi
# ':' (an epoch) would break PATH entries.
etcd_dest=$cache/etcd-${ETCD_VERSION//:/_}
if [[ ! -f $etcd_dest/.complete ]]; then
    log "installing etcd $ETCD_VERSION from Debian $ETCD_DEBIAN_SUITE into $etcd_dest"
    tmp=$(new_tmp "etcd-${ETCD_VERSION//:/_}")
    step etcd debian_pkg_extract "$ETCD_DEBIAN_SUITE" "$tmp" "etcd-server=$ETCD_VERSION" "etcd-client=$ETCD_VERSION"
    for bin in etcd etcdctl; do
        if missing=$(ldd "$tmp/usr/bin/$bin" 2>/dev/null | grep 'not found'); then
            die "$bin needs shared libraries this system lacks: $missing"
        fi
    done
    check_version "$tmp/usr/bin/etcd" "etcd Version: ${ETCD_VERSION%%[-+~]*}" --version >/dev/null
    check_version "$tmp/usr/bin/etcdctl" "etcdctl version: ${ETCD_VERSION%%[-+~]*}" version >/dev/null
    printf 'etcd-server %s\netcd-client %s\nsuite %s\n' "$ETCD_VERSION" "$ETCD_VERSION" "$ETCD_DEBIAN_SUITE" >"$tmp/VERSIONS"
    finish "$tmp" "$etcd_dest"
fi

# ---------------------------------------------------------------------------
# Symlinks and a final check that everything runs.

for bin in "${kube_bins[@]}"; do
    link "$bin" "$kube_dest/bin/$bin"
done
link kwok "$kwok_dest/bin/kwok"
link helm "$helm_dest/bin/helm"
link etcd "$etcd_dest/usr/bin/etcd"
link etcdctl "$etcd_dest/usr/bin/etcdctl"

for bin in kube-apiserver kube-controller-manager kube-scheduler; do
    check_version "$cache/bin/$bin" "Kubernetes $KUBE_VERSION" --version >/dev/null
done
log "kubernetes $KUBE_VERSION: $(check_version "$cache/bin/kubectl" "Client Version: $KUBE_VERSION" version --client)"
log "kwok: $(check_version "$cache/bin/kwok" "${KWOK_VERSION#v}" --version)"
log "helm: $(check_version "$cache/bin/helm" "$HELM_VERSION" version --short)"
log "etcd: $(check_version "$cache/bin/etcd" "etcd Version: ${ETCD_VERSION%%[-+~]*}" --version)"
printf '%s\n' "$cache/bin"
