#!/usr/bin/env bash
#
# hack/cluster.sh - a real local Kubernetes control plane (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler) with fake nodes
# simulated by kwok. No containers: pods scheduled to the fake nodes are
# marked Running by kwok, nothing is executed.
#
#   hack/cluster.sh up [--nodes N]   start everything (N fake nodes, default 3)
#   hack/cluster.sh down             stop everything and delete its state
#   hack/cluster.sh status           which components are up (exit 1 if any is down)
#   hack/cluster.sh env              print `export KUBECONFIG=...` and `export PATH=...`
#                                    (use: eval "$(hack/cluster.sh env)")
#
# State (certificates, etcd data, kubeconfigs, logs, pid files) lives in
# $SERVERLESSOS_LOCAL/cluster/ and the admin kubeconfig in
# $SERVERLESSOS_LOCAL/kubeconfig; SERVERLESSOS_LOCAL defaults to the repo's
# .local/. The binaries come from hack/install-tools.sh (cached under
# ${SERVERLESSOS_CACHE:-$HOME/.cache/serverlessos}).
#
# The fake nodes are named kwok-node-0..N-1, carry the annotation
# kwok.x-k8s.io/node=fake, the label type=kwok and the taint
# kwok.x-k8s.io/node=fake:NoSchedule: workloads meant for them need
#   tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/.." && pwd -P)
local_dir=${SERVERLESSOS_LOCAL:-$repo/.local}
# Where the API server listens, and extra SANs for its certificate. The local
# cluster's agents run in network namespaces and reach it over a bridge, so
# `make up` sets 0.0.0.0 and the bridge address.
apiserver_bind=${SERVERLESSOS_APISERVER_BIND:-127.0.0.1}
apiserver_extra_sans=${SERVERLESSOS_APISERVER_SANS:-}
cache_bin=${SERVERLESSOS_CACHE:-${HOME:?HOME is not set}/.cache/serverlessos}/bin

# Ranges inside the (fake) cluster.
service_cidr=10.96.0.0/12
service_ip=10.96.0.1 # first address of service_cidr: the `kubernetes` Service
cluster_cidr=10.244.0.0/16
kwok_fallback_cidr=10.0.0.1/16 # pod IPs on nodes without a podCIDR yet
sa_issuer=https://kubernetes.default.svc.cluster.local
cluster_name=serverlessos

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    printf 'cluster: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '/^#   hack\/cluster.sh/,/^#  *(use:/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Absolute paths (SERVERLESSOS_LOCAL may be relative).
mkdir -p "$local_dir" || die "cannot create $local_dir"
local_dir=$(cd "$local_dir" && pwd -P)
cluster=$local_dir/cluster
kubeconfig=$local_dir/kubeconfig
pki=$cluster/pki
logs=$cluster/logs
pids=$cluster/pids

# ---------------------------------------------------------------------------
# Processes

pid_of() {
    local f=$pids/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# running NAME: NAME's recorded pid is alive and is still NAME (not a reused pid).
running() {
    local pid argv0
    pid=$(pid_of "$1") || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1) || return 1
    [[ ${argv0##*/} == "$1" ]]
}

# start NAME ARG...: run $bin/NAME detached (own session, no terminal), output
# to $logs/NAME.log, pid to $pids/NAME.pid. setsid and nohup exec, so $! is
# the component's own pid.
start() {
    local name=$1
    shift
    log "starting $name (log: $logs/$name.log)"
    # 9>&-: the children must not inherit (and so hold forever) the lock.
    setsid nohup "$bin/$name" "$@" >"$logs/$name.log" 2>&1 </dev/null 9>&- &
    printf '%s\n' "$!" >"$pids/$name.pid"
}

# stop NAME: SIGTERM, wait up to 15 s, then SIGKILL.
stop() {
    local name=$1 pid i
    if running "$name"; then
        pid=$(pid_of "$name")
        kill -TERM "$pid" 2>/dev/null || :
        for ((i = 0; i < 150; i++)); do
            running "$name" || break
            sleep 0.1
        done
        if running "$name"; then
            log "$name (pid $pid) did not exit after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || :
            for ((i = 0; i < 50; i++)); do
                running "$name" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$pids/$name.pid"
}

stop_all() {
    local i
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        stop "${components[i]}"
    done
}

# fail NAME MESSAGE: report a component failure with the end of its log,
# stop what was started (the logs stay in $logs) and exit.
fail() {
    local name=$1 logfile=$logs/$1.log
    shift
    printf 'cluster: error: %s: %s\n' "$name" "$*" >&2
    if [[ -s $logfile ]]; then
        printf 'cluster: --- last lines of %s ---\n' "$logfile" >&2
        tail -n 30 "$logfile" | sed 's/^/cluster:   /' >&2
    fi
    log "stopping the components started so far; logs stay in $logs"
    stop_all
    die "'up' failed at $name (full log: $logfile)"
}

# wait_for NAME SECONDS COMMAND...: poll COMMAND until it succeeds; fail if
# NAME dies or the time runs out.
wait_for() {
    local name=$1 timeout=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        running "$name" || fail "$name" "exited during start-up"
        ((SECONDS < deadline)) || fail "$name" "not ready after ${timeout}s"
        sleep 0.2
    done
}

# A free TCP port on 127.0.0.1 below the ephemeral range (random start; a
# port is free when connecting to it is refused).
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            case " ${used_ports:-} " in *" $p "*) continue ;; esac
            used_ports="${used_ports:-} $p"
            printf '%s\n' "$p"
            return 0
        fi
    done
    die "no free port found on 127.0.0.1"
}

kctl() {
    "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"
}

apiserver_ready() {
    [[ -f $kubeconfig ]] && kctl get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

# https_ok PORT PATH: the component's secure port answers PATH with "ok".
https_ok() {
    [[ $(curl -ksS --max-time 3 "https://127.0.0.1:$1$2" 2>/dev/null) == ok ]]
}

# ---------------------------------------------------------------------------
# Certificates and kubeconfigs

# gen_ca NAME CN: self-signed CA in $pki/NAME.{crt,key}.
gen_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$pki/$1.key" -out "$pki/$1.crt" -days 3650 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature 2>>"$pki/openssl.log"
}

# gen_cert CA NAME SUBJECT USAGE [SAN]: $pki/NAME.{crt,key} signed by $pki/CA.
# USAGE: serverAuth, clientAuth or both.
gen_cert() {
    local ca=$1 name=$2 subj=$3 usage=$4 san=${5:-} ext
    ext=$pki/$name.ext
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -z $san ]] || echo "subjectAltName=$san"
    } >"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" 2>>"$pki/openssl.log" &&
        openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
            -CAcreateserial -days 365 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>>"$pki/openssl.log" &&
        rm -f "$pki/$name.csr" "$ext"
}

gen_pki() {
    local sans
    mkdir -p "$pki" && chmod 700 "$pki"
    sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    sans+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:::1,IP:$service_ip"
    [[ -z $apiserver_extra_sans ]] || sans+=",$apiserver_extra_sans"
    gen_ca ca kubernetes-ca &&
        gen_ca front-proxy-ca front-proxy-ca &&
        gen_cert ca apiserver /CN=kube-apiserver serverAuth "$sans" &&
        gen_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth &&
        gen_cert ca admin "/O=system:masters/CN=kubernetes-admin" clientAuth &&
        gen_cert ca controller-manager /CN=system:kube-controller-manager clientAuth &&
        gen_cert ca scheduler /CN=system:kube-scheduler clientAuth &&
        gen_cert ca kwok "/O=system:masters/CN=kwok-controller" clientAuth &&
        gen_cert front-proxy-ca front-proxy-client /CN=front-proxy-client clientAuth &&
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>>"$pki/openssl.log" &&
        openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>>"$pki/openssl.log" &&
        chmod 600 "$pki"/*.key
}

# write_kubeconfig FILE USER CERTNAME: a kubeconfig with embedded credentials.
write_kubeconfig() {
    local file=$1 user=$2 cert=$3
    (
        umask 077
        cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $cluster_name
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$cert.crt")
    client-key-data: $(base64 -w0 "$pki/$cert.key")
contexts:
- name: $user@$cluster_name
  context:
    cluster: $cluster_name
    user: $user
current-context: $user@$cluster_name
EOF
    )
}

# ---------------------------------------------------------------------------
# Fake nodes

node_manifests() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    beta.kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec:
  taints:
  - effect: NoSchedule
    key: kwok.x-k8s.io/node
    value: fake
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  nodeInfo:
    architecture: amd64
    bootID: ""
    containerRuntimeVersion: ""
    kernelVersion: ""
    kubeProxyVersion: fake
    kubeletVersion: fake
    machineID: ""
    operatingSystem: linux
    osImage: ""
    systemUUID: ""
  phase: Running
EOF
    done
}

# ensure_nodes N: create the missing kwok-node-0..N-1 and wait until all are Ready.
ensure_nodes() {
    local n=$1 have want=() i missing=()
    have=$(kctl get nodes -l type=kwok -o name 2>/dev/null) || have=
    for ((i = 0; i < n; i++)); do
        want+=("kwok-node-$i")
        [[ $'\n'$have$'\n' == *$'\n'"node/kwok-node-$i"$'\n'* ]] || missing+=("kwok-node-$i")
    done
    if ((${#missing[@]} > 0)); then
        log "creating ${#missing[@]} fake node(s)"
        node_manifests "$n" | kctl apply -f - >>"$logs/nodes.log" 2>&1 ||
            fail nodes "creating the fake nodes failed"
    fi
    if ! kctl wait --for=condition=Ready --timeout=90s "${want[@]/#/node/}" >>"$logs/nodes.log" 2>&1; then
        running kwok || fail kwok "exited"
        fail nodes "the fake nodes did not become Ready (kwok log: $logs/kwok.log)"
    fi
}

# ---------------------------------------------------------------------------
# Subcommands

cluster_up() {
    local nodes=$1 name all_up=1

    for name in "${components[@]}"; do
        running "$name" || all_up=
    done
    if [[ -n $all_up ]]; then
        bin=$cache_bin
        if apiserver_ready; then
            ensure_nodes "$nodes"
            log "already up ($(kctl get nodes -l type=kwok --no-headers 2>/dev/null | wc -l) kwok nodes); KUBECONFIG=$kubeconfig"
            return 0
        fi
    fi
    if [[ -d $cluster ]]; then
        log "found a stopped or partial cluster in $cluster; starting afresh"
        stop_all
        rm -rf "$cluster" "$kubeconfig"
    fi

    bin=$("$here/install-tools.sh") || die "installing the tools failed (see above)"
    mkdir -p "$cluster" "$logs" "$pids" "$cluster/kubeconfigs" "$cluster/kwok"

    log "generating certificates in $pki"
    gen_pki || {
        tail -n 20 "$pki/openssl.log" >&2
        die "generating certificates with openssl failed (log: $pki/openssl.log)"
    }

    used_ports=
    etcd_port=$(free_port)
    etcd_peer_port=$(free_port)
    apiserver_port=$(free_port)
    kcm_port=$(free_port)
    scheduler_port=$(free_port)
    printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\nCONTROLLER_MANAGER_PORT=%s\nSCHEDULER_PORT=%s\n' \
        "$etcd_port" "$etcd_peer_port" "$apiserver_port" "$kcm_port" "$scheduler_port" >"$cluster/ports.env"

    write_kubeconfig "$kubeconfig" kubernetes-admin admin
    write_kubeconfig "$cluster/kubeconfigs/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
    write_kubeconfig "$cluster/kubeconfigs/scheduler.kubeconfig" system:kube-scheduler scheduler
    write_kubeconfig "$cluster/kubeconfigs/kwok.kubeconfig" kwok-controller kwok

    # etcd: a throwaway single member, so no fsync.
    start etcd \
        --name="$cluster_name" \
        --data-dir="$cluster/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster="$cluster_name=http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster-state=new \
        --unsafe-no-fsync=true \
        --log-level=warn
    wait_for etcd 30 "$bin/etcdctl" --endpoints="http://127.0.0.1:$etcd_port" --command-timeout=2s endpoint health

    # --enable-aggregator-routing: APIServices (the operator's log API) are dialled at
    # their Service's endpoint addresses, as on clusters without kube-proxy on the
    # control plane; here the operator runs on the host, behind a selector-less Service.
    start kube-apiserver \
        --enable-aggregator-routing=true \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$apiserver_bind" \
        --secure-port="$apiserver_port" \
        --tls-cert-file="$pki/apiserver.crt" \
        --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --service-account-issuer="$sa_issuer" \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range="$service_cidr" \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota \
        --allow-privileged=true \
        --enable-bootstrap-token-auth=true \
        --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$pki/front-proxy-client.crt" \
        --proxy-client-key-file="$pki/front-proxy-client.key" \
        --cert-dir="$pki/apiserver-generated" \
        --profiling=false
    wait_for kube-apiserver 90 apiserver_ready

    local kcm_kc=$cluster/kubeconfigs/controller-manager.kubeconfig
    start kube-controller-manager \
        --kubeconfig="$kcm_kc" \
        --authentication-kubeconfig="$kcm_kc" \
        --authorization-kubeconfig="$kcm_kc" \
        --bind-address=127.0.0.1 \
        --secure-port="$kcm_port" \
        --cert-dir="$pki/controller-manager-generated" \
        --client-ca-file="$pki/ca.crt" \
        --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
        --root-ca-file="$pki/ca.crt" \
        --service-account-private-key-file="$pki/sa.key" \
        --cluster-signing-cert-file="$pki/ca.crt" \
        --cluster-signing-key-file="$pki/ca.key" \
        --use-service-account-credentials=true \
        --controllers='*' \
        --cluster-name="$cluster_name" \
        --allocate-node-cidrs=true \
        --cluster-cidr="$cluster_cidr" \
        --service-cluster-ip-range="$service_cidr" \
        --leader-elect=false \
        --profiling=false

    local sched_kc=$cluster/kubeconfigs/scheduler.kubeconfig
    start kube-scheduler \
        --kubeconfig="$sched_kc" \
        --authentication-kubeconfig="$sched_kc" \
        --authorization-kubeconfig="$sched_kc" \
        --bind-address=127.0.0.1 \
        --secure-port="$scheduler_port" \
        --cert-dir="$pki/scheduler-generated" \
        --leader-elect=false \
        --profiling=false

    # kwok: its own work dir, so no ~/.kwok/kwok.yaml is read; no Stage
    # configuration, so it uses its built-in default stages (node initialize +
    # heartbeat, pod ready/complete/delete).
    # (bash exports a variable assigned before a function call to the
    # commands that function runs.) --node-ip: the nodes' InternalIP and the
    # pods' hostIP; loopback, so nothing ever talks to a made-up address.
    KWOK_WORKDIR=$cluster/kwok start kwok \
        --kubeconfig="$cluster/kubeconfigs/kwok.kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-ip=127.0.0.1 \
        --cidr="$kwok_fallback_cidr" \
        --node-lease-duration-seconds=40

    if command -v curl >/dev/null 2>&1; then
        wait_for kube-controller-manager 60 https_ok "$kcm_port" /healthz
        wait_for kube-scheduler 60 https_ok "$scheduler_port" /healthz
    fi
    sleep 0.5
    running kwok || fail kwok "exited during start-up"

    ensure_nodes "$nodes"
    # Pods need the namespace's default ServiceAccount (the controller manager
    # creates it shortly after start).
    wait_for kube-controller-manager 60 kctl get serviceaccount default -n default
    log "up: $nodes kwok nodes; apiserver https://127.0.0.1:$apiserver_port"
    log "use: eval \"\$($here/cluster.sh env)\"   (KUBECONFIG=$kubeconfig)"
}

cluster_down() {
    local had=
    [[ -d $cluster || -f $kubeconfig ]] && had=1
    if [[ -d $pids ]]; then
        stop_all
    fi
    # Refuse to delete anything that is not our own state directory.
    [[ $cluster == */cluster && -n ${cluster%/cluster} ]] || die "refusing to delete '$cluster'"
    rm -rf "$cluster" "$kubeconfig"
    if [[ -n $had ]]; then
        log "down: stopped and removed $cluster"
    else
        log "already down"
    fi
}

cluster_status() {
    local name pid all=0 port_line=
    bin=$cache_bin
    for name in "${components[@]}"; do
        if running "$name"; then
            pid=$(pid_of "$name")
            printf '%-24s up (pid %s)\n' "$name" "$pid"
        else
            printf '%-24s down\n' "$name"
            all=1
        fi
    done
    if ((all == 0)); then
        if apiserver_ready; then
            port_line=$(grep '^APISERVER_PORT=' "$cluster/ports.env" 2>/dev/null || :)
            printf '%-24s ready (https://127.0.0.1:%s)\n' apiserver "${port_line#*=}"
            printf '%-24s %s Ready / %s\n' "kwok nodes" \
                "$(kctl get nodes -l type=kwok --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)" \
                "$(kctl get nodes -l type=kwok --no-headers 2>/dev/null | wc -l)"
            printf '%-24s %s\n' kubeconfig "$kubeconfig"
        else
            printf '%-24s not ready\n' apiserver
            all=1
        fi
    fi
    return "$all"
}

cluster_env() {
    printf 'export KUBECONFIG=%q\n' "$kubeconfig"
    # shellcheck disable=SC2016 # $PATH is expanded by whoever evals this
    printf 'export PATH=%q:"$PATH"\n' "$cache_bin"
}

# ---------------------------------------------------------------------------

cmd=${1:-}
[[ -n $cmd ]] || usage
shift

# One subcommand at a time (up/down/status on the same state directory).
with_lock() {
    exec 9>"$local_dir/.cluster.lock"
    flock -w 300 9 || die "timed out waiting for $local_dir/.cluster.lock"
}

case $cmd in
up)
    nodes=3
    while (($# > 0)); do
        case $1 in
        --nodes)
            (($# >= 2)) || die "--nodes needs a number"
            nodes=$2
            shift 2
            ;;
        --nodes=*) nodes=${1#--nodes=} && shift ;;
        *) usage ;;
        esac
    done
    [[ $nodes =~ ^[0-9]+$ ]] || die "--nodes needs a number, not '$nodes'"
    with_lock
    cluster_up "$nodes"
    ;;
down)
    (($# == 0)) || usage
    with_lock
    cluster_down
    ;;
status)
    (($# == 0)) || usage
    cluster_status
    ;;
env)
    (($# == 0)) || usage
    cluster_env
    ;;
-h | --help | help) usage ;;
*) usage ;;
esac
