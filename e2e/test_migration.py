"""Live migration on the local cluster: real CRIU, real processes, real agents in
separate network (and mount) namespaces, the operator driving ProcessMigrations.

What users trust: the process carries on from where it was (same state, same PID
inside its namespace), never runs twice, and any failure before the target has
confirmed leaves it running where it was.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc

from .conftest import (
    CACHE_BIN,
    LOCAL,
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

pytestmark = [local_only, pytest.mark.timeout(300)]
ENDED = ("Succeeded", "Failed", "RolledBack")

# Keeps its count in memory (and in a file in its working directory), touches a
# memory block of MIB MiB every tick, prints the count.
COUNTER = """
import os, sys, time
size = int(sys.argv[1]) << 20
block = bytearray(b"\\x01") * size
i = 0
while True:
    i += 1
    if size:
        block[(i * 4096) % size] = i & 0xFF
    print(i, flush=True)
    with open("state.txt", "w") as f:
        f.write(str(i))
    time.sleep(0.1)
"""


def counter(name: str, namespace: str, mib: int = 0, **spec: Any) -> dict[str, Any]:
    memory = f"{max(128, mib + 96)}Mi"
    return process_manifest(
        name,
        namespace,
        command=["python3", "-c", COUNTER, str(mib)],
        resources={"cpu": "200m", "memory": memory},
        **spec,
    )


def last_count(name: str, namespace: str) -> int:
    out = run(
        str(REPO / ".venv/bin/kubectl-sos"), "-n", namespace, "logs", "--tail", "1", name
    ).stdout
    return int(out.split()[-1]) if out.split() else 0


def state_file(node: str, namespace: str, name: str) -> int:
    path = LOCAL / "agents" / node / "state/processes" / namespace / name / "work/state.txt"
    return int(path.read_text() or 0)


def ns_pid(host_pid: int) -> int:
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid")


def migrate(name: str, namespace: str, *args: str, wait: bool = True) -> tuple[str, dict[str, Any]]:
    """`kubectl sos migrate`; (the ProcessMigration's name, its status at the end)."""
    result = run(
        str(REPO / ".venv/bin/kubectl-sos"),
        "-n",
        namespace,
        "migrate",
        name,
        *args,
        *(["--wait", "--timeout", "240"] if wait else []),
        check=False,
        timeout=260,
    )
    created = result.stdout.splitlines()[0]
    assert created.startswith("processmigration/"), result.stdout + result.stderr
    migration = created.split()[0].split("/", 1)[1]
    return migration, migration_status(migration, namespace)


def migration_status(migration: str, namespace: str) -> dict[str, Any]:
    return dict(get_json("processmigration", migration, "-n", namespace).get("status") or {})


def wait_migration_phase(
    migration: str, namespace: str, phases: tuple[str, ...], timeout: float = 120
) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (s := migration_status(migration, namespace)).get("phase") in phases and s,
            timeout=timeout,
            every=0.05,
            message=f"{migration} in {phases}",
        )
    )


def node_ip(node: str) -> str:
    return agent_endpoint(node).rsplit(":", 1)[0]


def node_index(node: str) -> int:
    return int(node.rsplit("-", 1)[1])


def restart_agents() -> None:
    nodes = len(list((LOCAL / "agents").glob("kwok-node-*")))
    run(str(REPO / "hack/agents.sh"), "up", "--nodes", str(nodes), timeout=120)


def assert_resumed_in_place(
    name: str, namespace: str, before: dict[str, Any], count_before: int
) -> None:
    """Rolled back: the same process (same host PID) runs on the same node and
    counts on from where it was."""
    status = wait_phase(name, namespace, "Running")
    assert status["node"] == before["node"]
    assert status["pid"] == before["pid"], "the original process, resumed, not a restart"
    assert status.get("restarts", 0) == before.get("restarts", 0)
    first = last_count(name, namespace)
    time.sleep(1.0)
    later = last_count(name, namespace)
    assert later > first >= count_before, "it runs on"
    assert later < count_before + 2000, "from where it was, not from zero"


# ----- it moves, in each mode the machine supports -----------------------------


@pytest.mark.parametrize("mode", ["StopAndCopy", "PostCopy"])
def test_a_counter_migrates_and_carries_on_from_where_it_was(namespace: str, mode: str) -> None:
    apply(counter("c", namespace, mib=64))
    before = wait_phase("c", namespace, "Running")
    wait_for(lambda: last_count("c", namespace) >= 10, timeout=30)
    assert ns_pid(before["pid"]) == 1
    uid = get_json("sp", "c", "-n", namespace)["metadata"]["uid"]

    migration, result = migrate("c", namespace, "--mode", mode)
    assert result["phase"] == "Succeeded", result
    assert result["mode"] == mode and result["sourceNode"] == before["node"]
    assert result["targetNode"] != before["node"]
    assert result["downtimeSeconds"] > 0 and result["transferredBytes"] > 0

    after = wait_phase("c", namespace, "Running")
    assert after["node"] == result["targetNode"]
    assert ns_pid(after["pid"]) == 1, "its PID inside its namespace is unchanged"
    assert get_json("sp", "c", "-n", namespace)["metadata"]["uid"] == uid
    assert after.get("restarts", 0) == 0
    count = last_count("c", namespace)
    on_disk = state_file(after["node"], namespace, "c")
    time.sleep(1.0)
    assert last_count("c", namespace) > count, "it runs on the target"
    assert state_file(after["node"], namespace, "c") > on_disk, "and writes its working dir there"
    # It counted on from its state: the target's log continues the source's lines.
    lines = [
        int(x)
        for x in run(
            str(REPO / ".venv/bin/kubectl-sos"), "-n", namespace, "logs", "c"
        ).stdout.split()
    ]
    assert lines == list(range(1, len(lines) + 1)), "no restart from zero, no gap"
    assert not Path(f"/proc/{before['pid']}").exists(), "the source copy is gone"
    history = after.get("migrations") or status_of("c", namespace).get("migrations")
    assert history and history[-1]["name"] == migration and history[-1]["phase"] == "Succeeded"
    conditions = {c["type"]: c for c in after["conditions"]}
    assert conditions["Migrating"]["status"] == "False"


def test_pre_copy_is_refused_where_no_node_tracks_dirty_pages(namespace: str) -> None:
    nodes = get_json("serverlessnodes")["items"]
    if any("dirty-tracking" in n["status"]["capabilities"]["criu"]["features"] for n in nodes):
        pytest.skip("a node here tracks dirty pages")
    apply(counter("c", namespace))
    before = wait_phase("c", namespace, "Running")
    _, result = migrate("c", namespace, "--mode", "PreCopy")
    assert result["phase"] == "Failed"
    assert "dirty-page tracking" in result["message"]
    after = status_of("c", namespace)
    assert after["node"] == before["node"] and after["pid"] == before["pid"]


def test_a_bogus_target_fails_cleanly_and_the_process_stays(namespace: str) -> None:
    apply(counter("c", namespace))
    before = wait_phase("c", namespace, "Running")
    _, result = migrate("c", namespace, "--to", "no-such-node")
    assert result["phase"] == "Failed"
    assert "no node 'no-such-node'" in result["message"]
    after = status_of("c", namespace)
    assert (after["node"], after["pid"], after["phase"]) == (
        before["node"],
        before["pid"],
        "Running",
    )


def test_a_second_migration_of_the_same_process_is_refused(namespace: str) -> None:
    apply(counter("c", namespace, mib=256))
    wait_phase("c", namespace, "Running")
    wait_for(lambda: last_count("c", namespace) >= 3, timeout=30)
    manifests = [
        {
            "apiVersion": "serverlessos.io/v1alpha1",
            "kind": "ProcessMigration",
            "metadata": {"name": f"m{i}", "namespace": namespace},
            "spec": {"process": "c", "mode": "StopAndCopy"},
        }
        for i in (1, 2)
    ]
    apply(*manifests)
    ends = [
        wait_migration_phase(f"m{i}", namespace, ("Succeeded", "Failed", "RolledBack"))
        for i in (1, 2)
    ]
    phases = sorted(e["phase"] for e in ends)
    assert phases == ["Failed", "Succeeded"], ends
    refused = next(e for e in ends if e["phase"] == "Failed")
    assert "already has an active migration" in refused["message"]


def test_a_process_criu_cannot_move_fails_with_criu_reason_and_keeps_running(
    namespace: str, tmp_path: Path
) -> None:
    """A Unix socket connected to a process outside its tree is a resource CRIU
    refuses to checkpoint. The socket lies in a node directory the local agents show
    their processes (--process-ro-path: the tool cache), open to the process's uid."""
    path = CACHE_BIN.parent / f"sos-e2e-{namespace}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen(1)
    try:
        holder = (
            "import socket, time\n"
            f"s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r})\n"
            "i = 0\n"
            "while True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.1)\n"
        )
        apply(process_manifest("h", namespace, command=["python3", "-c", holder]))
        before = wait_phase("h", namespace, "Running")
        conn, _ = listener.accept()
        wait_for(lambda: last_count("h", namespace) >= 3, timeout=30)
        count = last_count("h", namespace)
        _, result = migrate("h", namespace, "--mode", "StopAndCopy")
        assert result["phase"] == "RolledBack", result
        assert "CRIU dump failed" in result["message"] and "socket" in result["message"].lower()
        assert_resumed_in_place("h", namespace, before, count)
        conn.close()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


# ----- a real server, with a client writing through the move ---------------------


class Redis:
    """Just enough RESP for SET/GET."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def call(self, *args: str) -> bytes | None:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        self.sock.sendall(payload.encode())
        line = self.reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(b"$"):
            size = int(line[1:])
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if line.startswith(b"-"):
            raise ConnectionError(line.decode().strip())
        return line[1:].strip()  # +OK, :1

    def close(self) -> None:
        self.sock.close()


def test_redis_migrates_under_writes_and_loses_no_acknowledged_write(
    namespace: str, redis_server: str
) -> None:
    port = 20000 + secrets.randbelow(20000)  # tests share the nodes' addresses
    apply(
        process_manifest(
            "redis",
            namespace,
            command=[redis_server],
            args=[
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            resources={"cpu": "500m", "memory": "256Mi"},
        )
    )
    before = wait_phase("redis", namespace, "Running")
    acked: list[int] = []
    reconnects = [0]
    stop = threading.Event()

    def connect() -> Redis:
        # Where the process runs now, from its ServerlessProcess status.
        return Redis(node_ip(status_of("redis", namespace)["node"]), port)

    def writer() -> None:
        client = wait_for(lambda: _try(connect), timeout=30)
        i = 0
        while not stop.is_set():
            try:
                if client.call("SET", f"k{i}", str(i)) == b"OK":
                    acked.append(i)  # acknowledged: must survive
                i += 1
            except OSError:
                client.close()
                reconnects[0] += 1
                time.sleep(0.05)
                client = wait_for(lambda: _try(connect), timeout=60)
        client.close()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_for(lambda: len(acked) > 200, timeout=30)
    _, result = migrate("redis", namespace)
    assert result["phase"] == "Succeeded", result
    wait_for(lambda: len(acked) > 0 and acked[-1] > 0 and reconnects[0] >= 1, timeout=30)
    time.sleep(1.0)  # writes on the target
    stop.set()
    thread.join(timeout=30)
    after = status_of("redis", namespace)
    assert after["node"] == result["targetNode"] != before["node"]
    check = Redis(node_ip(after["node"]), port)
    missing = [i for i in acked if check.call("GET", f"k{i}") != str(i).encode()]
    check.close()
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged writes lost, e.g. {missing[:5]}"
    )
    assert len(acked) > 300


def _try(connect: Any) -> Any:
    try:
        return connect()
    except OSError:
        return None


# ----- faults: each rolls back, the source runs on with its state ----------------


def _start_big(namespace: str) -> tuple[dict[str, Any], int]:
    """A process large enough (768 MiB) that its transfer takes a while."""
    apply(counter("big", namespace, mib=768))
    before = wait_phase("big", namespace, "Running", timeout=60)
    wait_for(lambda: last_count("big", namespace) >= 5, timeout=60)
    return before, last_count("big", namespace)


def _migrate_until_transferring(namespace: str, target: str = "") -> tuple[str, dict[str, Any]]:
    migration, _ = migrate(
        "big", namespace, "--mode", "StopAndCopy", *(["--to", target] if target else []), wait=False
    )
    status = wait_migration_phase(
        migration, namespace, ("Transferring", "Restoring", "Succeeded", "Failed", "RolledBack")
    )
    assert status["phase"] == "Transferring", f"too late to inject the fault: {status}"
    return migration, status


def test_target_agent_killed_mid_transfer_rolls_back(namespace: str) -> None:
    before, count = _start_big(namespace)
    target = next(n for n in ("kwok-node-0", "kwok-node-1", "kwok-node-2") if n != before["node"])
    agent_pid = int((LOCAL / "agents" / target / "agent.pid").read_text())
    try:
        migration, _ = _migrate_until_transferring(namespace, target)
        os.kill(agent_pid, signal.SIGKILL)
        result = wait_migration_phase(migration, namespace, ENDED)
        assert result["phase"] == "RolledBack", result
        assert "checkpoint" in result["message"]
        assert_resumed_in_place("big", namespace, before, count)
    finally:
        restart_agents()


def test_the_link_between_the_nodes_cut_mid_transfer_rolls_back(namespace: str) -> None:
    before, count = _start_big(namespace)
    target = next(n for n in ("kwok-node-0", "kwok-node-1", "kwok-node-2") if n != before["node"])
    veth = f"sosv{node_index(target)}"
    try:
        migration, _ = _migrate_until_transferring(namespace, target)
        subprocess.run(["ip", "link", "set", veth, "down"], check=True)
        result = wait_migration_phase(
            migration, namespace, ("RolledBack", "Failed", "Succeeded"), timeout=90
        )
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    assert result["phase"] == "RolledBack", result
    assert_resumed_in_place("big", namespace, before, count)


def test_operator_killed_mid_migration_finishes_or_rolls_back(namespace: str) -> None:
    before, count = _start_big(namespace)
    try:
        migration, _ = _migrate_until_transferring(namespace)
        run(str(REPO / "hack/operator.sh"), "kill9")
    finally:
        run(str(REPO / "hack/operator.sh"), "start", timeout=60)
    result = wait_migration_phase(
        migration, namespace, ("RolledBack", "Failed", "Succeeded"), timeout=120
    )
    assert result["phase"] == "RolledBack", result
    assert "operator restarted" in result["message"]
    assert_resumed_in_place("big", namespace, before, count)


def test_a_process_deleted_during_its_migration_leaves_no_copy(namespace: str) -> None:
    before, _ = _start_big(namespace)
    migration, _ = _migrate_until_transferring(namespace)
    kubectl("delete", "sp", "big", "-n", namespace, "--wait=false")
    result = wait_migration_phase(migration, namespace, ENDED, timeout=120)
    assert result["phase"] in ("Failed", "RolledBack"), result

    def copies() -> list[str]:
        found = []
        for node in ("kwok-node-0", "kwok-node-1", "kwok-node-2"):
            channel = agent_channel(node)
            listed = pb_grpc.AgentStub(channel).ListProcesses(
                pb.ListProcessesRequest(namespace=namespace), timeout=10
            )
            channel.close()
            found += [f"{node}/{p.spec.name}" for p in listed.processes]
        return found

    wait_for(lambda: not copies(), timeout=60, message="no copy on any node")
    assert not Path(f"/proc/{before['pid']}").exists()
