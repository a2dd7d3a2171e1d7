"""Confined processes on the real cluster: each sees only its own tree, holds no
capability, cannot write cgroupfs or read another's files or the agent's state, stays
so across both migration modes, and the admission policy bounds what it may ask for."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR
from serverlessos.auth.pki import CA, cert_pem, key_pem, new_key

from .conftest import (
    AGENTS_TLS,
    REPO,
    agent_channel,
    agent_endpoint,
    apply,
    get_json,
    kubectl,
    local_only,
    process_manifest,
    run,
    status_of,
    wait_for,
    wait_phase,
)
from .test_migration import migrate

pytestmark = pytest.mark.timeout(300)
SOS = str(REPO / ".venv/bin/kubectl-sos")
AGENT_STATE = "/var/lib/serverlessos-agent"  # hack/agents.sh: where each agent keeps its state

# Says what it sees, once, then counts (its count in memory and in its /work).
PROBE = f"""
grep -E '^(Uid|Gid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
echo "pids-visible $(ls /proc | grep -c '^[0-9]')"
test -e {AGENT_STATE} && echo "agent-state VISIBLE" || echo "agent-state absent"
test -e {REPO} && echo "repo VISIBLE" || echo "repo absent"
cat "$OTHER/secret.txt" 2>/dev/null && echo "other VISIBLE" || echo "other absent"
echo 1 2>/dev/null > /sys/fs/cgroup/cgroup.procs && echo "cgroup WRITABLE" ||
  echo "cgroup read-only"
mkdir /sys/fs/cgroup/escape 2>/dev/null && echo "cgroup-mkdir WORKED" || echo "cgroup-mkdir refused"
touch /usr/intruder 2>/dev/null && echo "usr WRITABLE" || echo "usr read-only"
unshare -U true 2>/dev/null && echo "unshare WORKED" || echo "unshare refused"
echo the-secret-of-$NAME > /work/secret.txt && echo "work writable"
echo "tmp $(stat -c %a /tmp)"
i=0; while true; do i=$((i+1)); echo "count $i"; sleep 0.5; done
"""


def logs(name: str, namespace: str) -> str:
    return run(SOS, "-n", namespace, "logs", name, check=False).stdout


def probed(name: str, namespace: str, **spec: Any) -> str:
    env = [{"name": "NAME", "value": name}, {"name": "OTHER", "value": spec.pop("other", "/")}]
    apply(process_manifest(name, namespace, command=["sh", "-c", PROBE], env=env, **spec))
    wait_phase(name, namespace, "Running", timeout=60)
    return str(wait_for(lambda: "count 1" in (out := logs(name, namespace)) and out, timeout=30))


def facts(text: str) -> dict[str, str]:
    return {
        k.rstrip(":"): v.strip() for k, _, v in (line.partition(" ") for line in text.splitlines())
    }


def assert_confined(out: str, uid: int) -> None:
    lines = out.splitlines()
    status = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines if ":\t" in line}
    assert status["Uid"] == [str(uid)] * 4, status
    for caps in ("CapEff", "CapBnd", "CapAmb"):
        assert status[caps] == ["0000000000000000"], (caps, status)
    assert status["NoNewPrivs"] == ["1"] and status["Seccomp"] == ["2"], status


@local_only
def test_a_process_sees_only_its_own_tree(namespace: str) -> None:
    first = probed("first", namespace)
    # The second one tries the first one's working directory by its path on the node.
    node = status_of("first", namespace)["node"]
    other = f"{AGENT_STATE}/processes/{namespace}/first/work"
    second = probed("second", namespace, other=other, nodeSelector={"kubernetes.io/hostname": node})
    for out in (first, second):
        assert_confined(out, 1000)
        seen = facts(out)
        # Itself, the command substitution's shell, ls and grep: its own PID namespace.
        assert int(seen["pids-visible"]) <= 4, seen
        assert seen["agent-state"] == "absent" and seen["repo"] == "absent"
        assert seen["cgroup"] == "read-only" and seen["cgroup-mkdir"] == "refused"
        assert seen["usr"] == "read-only" and seen["unshare"] == "refused"
        assert seen["work"] == "writable" and seen["tmp"] == "1777"
    assert facts(second)["other"] == "absent"
    assert "the-secret-of-first" not in second


@local_only
@pytest.mark.parametrize("mode", ["StopAndCopy", "PostCopy"])
def test_a_confined_process_moves_and_stays_confined(namespace: str, mode: str) -> None:
    spec = {"securityContext": {"runAsUser": 1234, "runAsGroup": 1234, "fsGroup": 4321}}
    probed("mover", namespace, **spec)
    before = status_of("mover", namespace)
    count = int(logs("mover", namespace).split()[-1])
    _, result = migrate("mover", namespace, "--mode", mode)
    assert result["phase"] == "Succeeded", result
    after = status_of("mover", namespace)
    assert after["node"] != before["node"]
    time.sleep(1.5)
    out = logs("mover", namespace)
    assert int(out.split()[-1]) > count, "it counts on from where it was"
    assert f"count {count + 1}\n" in out and out.count("count 1\n") == 1, "not restarted"
    # Its confinement came along: read it from the restored process itself.
    probe = kubectl(
        "get", "sp", "mover", "-n", namespace, "-o", "jsonpath={.status.pid}"
    ).stdout.strip()
    assert probe, after
    status = Path(f"/proc/{probe}/status").read_text()
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
    assert "Seccomp:\t2" in status
    assert f"Uid:\t{100000 + 1234}\t" in status, "uid 1234 inside: an unprivileged uid outside"
    groups = next(line for line in status.splitlines() if line.startswith("Groups:"))
    assert str(100000 + 4321) in groups


def test_admission_bounds_what_a_process_may_ask_for(namespace: str) -> None:
    def create(**security: Any) -> str:
        body = process_manifest("asker", namespace, command=["true"], securityContext=security)
        result = kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
        )
        return result.stderr if result.returncode else "allowed"

    assert "must set a non-zero runAsUser" in create()  # root, in a restricted namespace
    assert "must set a non-zero runAsUser" in create(runAsUser=0)
    assert create(runAsUser=1000, capabilities={"add": ["NET_BIND_SERVICE"]}) == "allowed"
    assert "more than level restricted allows" in create(
        runAsUser=1000, capabilities={"add": ["SYS_ADMIN"]}
    )
    assert "needs a namespace labelled serverlessos.io/enforce=privileged" in create(
        runAsUser=1000, seccompProfile={"type": "Unconfined"}
    )
    assert "less than or equal to 65535" in create(runAsUser=70000)  # the CRD's own bound
    kubectl("label", "namespace", namespace, "serverlessos.io/enforce=baseline")
    assert create() == "allowed"  # root inside its user namespace
    assert create(capabilities={"add": ["CHOWN"]}) == "allowed"
    assert "more than level baseline allows" in create(capabilities={"add": ["SYS_ADMIN"]})
    kubectl("label", "namespace", namespace, "serverlessos.io/enforce=privileged", "--overwrite")
    assert create(seccompProfile={"type": "Unconfined"}) == "allowed"
    kubectl("label", "namespace", namespace, "serverlessos.io/enforce=sometimes", "--overwrite")
    assert "is not one of privileged, baseline, restricted" in create(runAsUser=1000)


@pytest.mark.skipif(
    not AGENTS_TLS, reason="the agents run with --insecure (SERVERLESSOS_AGENT_TLS=0)"
)
def test_the_agents_turn_away_plaintext_and_other_cas() -> None:
    node = get_json("serverlessnodes")["items"][0]["metadata"]["name"]
    endpoint = agent_endpoint(node)
    ref = pb.ProcessRef(namespace="default", name="counter")
    with grpc.insecure_channel(endpoint) as channel, pytest.raises(grpc.RpcError) as plain:
        pb_grpc.AgentStub(channel).GetProcess(pb.GetProcessRequest(ref=ref), timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    foreign = CA.create("another cluster")
    key = new_key()
    credentials = grpc.ssl_channel_credentials(
        foreign.cert_pem, key_pem(key), cert_pem(foreign.issue(key.public_key(), OPERATOR))
    )
    options = [("grpc.ssl_target_name_override", identity.node(node).tls_name)]
    with (
        grpc.secure_channel(endpoint, credentials, options) as channel,
        pytest.raises(grpc.RpcError) as other,
    ):
        pb_grpc.AgentStub(channel).GetProcess(pb.GetProcessRequest(ref=ref), timeout=5)
    assert other.value.code() == grpc.StatusCode.UNAVAILABLE
    # The operator's identity from this cluster's CA gets in.
    with agent_channel(node) as channel:
        listed = pb_grpc.AgentStub(channel).ListProcesses(pb.ListProcessesRequest(), timeout=10)
    assert listed.revision >= 0
