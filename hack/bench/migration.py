"""Live migration benchmark: downtime and total time per mode, against a cold restart
and the network's bandwidth, all measured in the same run.

    .venv/bin/python hack/bench/migration.py [--sizes 256,1024] [--runs 5]

Against the local cluster (`make up`: kwok nodes with real agents, real CRIU). For
each size, a process allocates that much memory (touched, non-zero), keeps dirtying
it (a rolling window of pages, --dirty-mibps), checks random pages against what it
wrote and prints a counter. It migrates back and forth between kwok-node-0 and
kwok-node-1 in each mode the nodes support (ProcessMigration with an explicit
target); each migration must succeed and the process must count on from where it
was. Beside it, a copy of the same program is restarted cold: its ServerlessProcess
is deleted and re-created on another node, timed until the new process has
allocated its memory. The raw TCP bandwidth between the two nodes' network
namespaces is measured too. Everything is created in a namespace of its own,
deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import benchlib  # type: ignore[import-not-found]  # hack/bench/, beside this script
import grpc
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / ".local"
GROUP, VERSION = "serverlessos.io", "v1alpha1"
PROCESSES, MIGRATIONS, NODES = "serverlessprocesses", "processmigrations", "serverlessnodes"
TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
ENDED = ("Succeeded", "Failed", "RolledBack")
POLL = 0.02  # seconds between status polls
MiB = 1 << 20

# argv: size in MiB, pages dirtied per 10 ms tick. Prints "ready <alloc s> <unix time>"
# once its memory is allocated, then a counter every 10 ticks. Exits 3 if a page does
# not hold what it last wrote there; exits at once on SIGTERM.
PROGRAM = """
import os, random, signal, sys, time
# As PID 1 of its PID namespace it would ignore SIGTERM (no handler) until SIGKILL.
signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
PAGE, TICK = 4096, 0.01
t = time.time()
size = int(sys.argv[1]) << 20
per_tick = int(sys.argv[2])
pages = size // PAGE
block = bytearray(b"\\x01") * size
print("ready", f"{time.time() - t:.4f}", f"{time.time():.6f}", flush=True)
windows = -(-pages // per_tick)

def expected(page, ticks):
    laps, pos = divmod(ticks, windows)
    window = page // per_tick
    if window < pos:
        return laps % 254 + 2
    return (laps - 1) % 254 + 2 if laps else 1

k = i = 0
deadline = time.monotonic()
while True:
    first = (k % windows) * per_tick
    last = min(first + per_tick, pages)
    block[first * PAGE : last * PAGE : PAGE] = bytes((k // windows % 254 + 2,)) * (last - first)
    k += 1
    if k % 10 == 0:
        for _ in range(8):
            p = random.randrange(pages)
            if block[p * PAGE] != expected(p, k):
                print("CORRUPT page", p, block[p * PAGE], expected(p, k), flush=True)
                sys.exit(3)
        i += 1
        print(i, flush=True)
    deadline += TICK
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        deadline = time.monotonic()  # fell behind (or was frozen): no catch-up burst
"""

RECEIVER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
buf = memoryview(bytearray(4 << 20))
n, t = 0, time.perf_counter()
while k := c.recv_into(buf):
    n += k
print(n, time.perf_counter() - t, flush=True)
"""

SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
chunk = b"\\x01" * (4 << 20)
for _ in range(int(sys.argv[3]) // len(chunk)):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""


def machine() -> str:
    return str(benchlib.machine())


def pct(values: list[float], q: float) -> float:
    return float(benchlib.pct(values, q))


def as_dict(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value)  # the client returns parsed JSON, typed as object


class Interrupted(Exception):
    pass


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


@dataclass
class MigrationRun:
    size: int
    mode: str
    source: str
    target: str
    ok: bool = False
    phase: str = ""
    downtime: float | None = None
    total: float | None = None  # create -> Succeeded seen
    switched: float | None = None  # create -> running on the target (downtime recorded)
    restoring: float | None = None  # create -> phase Restoring seen
    transferred: int | None = None
    dump: float | None = None  # from the Restoring phase's message, when a poll saw it
    send: float | None = None
    message: str = ""
    problem: str = ""

    @property
    def restore(self) -> float | None:
        if self.restoring is None or self.switched is None:
            return None
        return self.switched - self.restoring


@dataclass
class ColdRun:
    size: int
    source: str
    target: str
    total: float | None = None  # kill -> "ready" printed by the new process
    kill: float | None = None  # delete -> ServerlessProcess gone
    start: float | None = None  # create -> phase Running
    alloc: float | None = None  # as the process measured its own allocation
    problem: str = ""


@dataclass
class Bench:
    custom: client.CustomObjectsApi
    core: client.CoreV1Api
    namespace: str
    endpoints: dict[str, str]
    dirty_pages: int

    # ----- kube -------------------------------------------------------------

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return as_dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, name
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return dict((self.get(plural, name) or {}).get("status") or {})

    def create_process(self, name: str, mib: int, node: str | None = None) -> None:
        spec: dict[str, Any] = {
            "command": ["python3", "-c", PROGRAM, str(mib), str(self.dirty_pages)],
            "resources": {"cpu": "500m", "memory": f"{mib + 100}Mi"},
            "restartPolicy": "Never",
            "tolerations": [TOLERATION],
            "securityContext": {"runAsUser": 1000},  # restricted namespaces: non-root
        }
        if node:
            spec["nodeSelector"] = {"kubernetes.io/hostname": node}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServerlessProcess",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PROCESSES, body)

    def active_migrations(self) -> list[str]:
        items = as_dict(
            self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, MIGRATIONS)
        )["items"]
        return [
            m["metadata"]["name"]
            for m in items
            if (m.get("status") or {}).get("phase") not in ENDED
        ]

    def settle(self) -> None:
        """Let a migration still in flight (after Ctrl-C) end: a process deleted during
        its migration leaves its restored copy running on the target, unowned."""
        if active := self.active_migrations():
            print(f"waiting for {', '.join(active)} to end", file=sys.stderr)
            self.wait("the migrations to end", lambda: not self.active_migrations(), 300)

    def delete_process(self, name: str, settle: bool = True) -> None:
        if settle:
            self.settle()
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PROCESSES, name
            )

    def wait(self, what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(POLL)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    def wait_running(self, name: str, timeout: float = 120) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            status = self.status(PROCESSES, name)
            if status.get("phase") in ("Failed", "Succeeded"):
                raise RuntimeError(f"{name} ended: {status}")
            return status if status.get("phase") == "Running" and status.get("node") else None

        return cast(dict[str, Any], self.wait(f"{name} Running", running, timeout))

    # ----- the process's output, through the log API (as kubectl sos logs) -------

    def log(self, name: str, node: str, tail: int = 0) -> list[str]:
        api = self.custom.api_client
        path = (
            f"/apis/logs.serverlessos.io/v1alpha1/namespaces/{self.namespace}/"
            f"{PROCESSES}/{name}/log"
        )
        method, url, headers, _, _ = api.param_serialize(
            "GET", path, query_params=[("tailLines", str(tail))], auth_settings=["BearerToken"]
        )
        response = api.call_api(method, url, header_params=headers, _request_timeout=30)
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"reading {name}'s log: {response.status} {data[:200]!r}")
        return bytes(data).decode(errors="replace").splitlines()

    def count(self, name: str, node: str) -> int:
        lines = self.log(name, node, tail=1)
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0

    def ready_line(self, name: str, node: str) -> tuple[float, float] | None:
        """(seconds it took to allocate, unix time it was ready) once it printed them."""
        with contextlib.suppress(grpc.RpcError):
            for line in self.log(name, node, tail=0)[:1]:
                if line.startswith("ready "):
                    _, alloc, at = line.split()
                    return float(alloc), float(at)
        return None

    def log_problem(self, name: str, node: str) -> str:
        """Why its whole output is not one allocation and a counter from 1, or ""."""
        lines = self.log(name, node)
        if not lines or not lines[0].startswith("ready "):
            return f"its log does not start with 'ready': {lines[:1]}"
        if sum(line.startswith("ready") for line in lines) != 1:
            return "it allocated again: the process restarted"
        bad = [line for line in lines[1:] if not line.isdigit()]
        if bad:
            return f"unexpected output: {bad[0][:200]}"
        counts = [int(line) for line in lines[1:]]
        if counts != list(range(1, len(counts) + 1)):
            gap = next(i for i, c in enumerate(counts) if c != i + 1)
            return f"counter not contiguous at line {gap + 2}: {counts[max(0, gap - 2) : gap + 2]}"
        return ""

    # ----- one migration ------------------------------------------------------

    def migrate(self, name: str, size: int, mode: str, target: str) -> MigrationRun:
        before = self.wait_running(name)
        source = before["node"]
        run = MigrationRun(size=size, mode=mode, source=source, target=target)
        count_before = self.count(name, source)
        migration = f"{name}-{mode.lower()}-{secrets.token_hex(3)}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ProcessMigration",
            "metadata": {"name": migration, "namespace": self.namespace},
            "spec": {"process": name, "targetNode": target, "mode": mode},
        }
        t0 = time.monotonic()
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, MIGRATIONS, body
        )
        status: dict[str, Any] = {}
        deadline = t0 + 600
        while time.monotonic() < deadline:
            status = self.status(MIGRATIONS, migration)
            now = time.monotonic()
            found = re.search(
                r"dumped in ([\d.]+)s, sent \d+ bytes in ([\d.]+)s", status.get("message", "")
            )
            if found:
                run.dump, run.send = float(found[1]), float(found[2])
            if run.restoring is None and status.get("phase") == "Restoring":
                run.restoring = now - t0
            if run.switched is None and status.get("downtimeSeconds") is not None:
                run.switched = now - t0
            if status.get("phase") in ENDED:
                run.total = now - t0
                break
            time.sleep(POLL)
        run.phase = str(status.get("phase", "none"))
        run.message = str(status.get("message", ""))
        run.downtime = status.get("downtimeSeconds")
        run.transferred = status.get("transferredBytes")
        if run.phase != "Succeeded":
            run.problem = f"{run.phase}: {run.message}" if run.total else "no end in 600 s"
            return run
        after = self.status(PROCESSES, name)
        if after.get("node") != target or after.get("phase") != "Running":
            run.problem = f"the process is {after.get('phase')} on {after.get('node')}"
            return run
        if after.get("restarts", 0) != before.get("restarts", 0):
            run.problem = "the process restarted"
            return run
        try:
            self.wait("the counter to go on", lambda: self.count(name, target) > count_before, 10)
        except RuntimeError:
            run.problem = (
                f"counter at {self.count(name, target)} after, {count_before} before the move"
            )
            return run
        run.problem = self.log_problem(name, target)
        run.ok = not run.problem
        return run

    # ----- one cold restart -------------------------------------------------

    def cold_restart(self, old: str, new: str, size: int, target: str) -> ColdRun:
        source = self.wait_running(old)["node"]
        run = ColdRun(size=size, source=source, target=target)
        t0 = time.time()
        self.delete_process(old, settle=False)  # never migrated
        self.wait(f"{old} gone", lambda: self.get(PROCESSES, old) is None, 120)
        t_gone = time.time()
        self.create_process(new, size, node=target)
        status = self.wait_running(new)
        t_running = time.time()
        if status["node"] != target:
            run.problem = f"placed on {status['node']}, not {target}"
        ready = self.wait(f"{new} ready", lambda: self.ready_line(new, target), 120)
        run.alloc, ready_at = ready
        run.total = ready_at - t0
        run.kill = t_gone - t0
        run.start = t_running - t_gone
        return run


# ----- the network ------------------------------------------------------------


def bandwidth(src: str, dst: str, dst_ip: str, total: int) -> float:
    """Bytes per second of one TCP stream from src's network namespace to dst's."""
    port = 30000 + secrets.randbelow(20000)

    def inside(node: str, script: str, *args: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/sos-{node}", "python3", "-c", script, *args]

    receiver = subprocess.Popen(
        inside(dst, RECEIVER, dst_ip, str(port)), stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "listening":
            raise RuntimeError("the bandwidth receiver did not start")
        sender = subprocess.run(
            inside(src, SENDER, dst_ip, str(port), str(total)), timeout=300, check=False
        )
        out, _ = receiver.communicate(timeout=60)
        if sender.returncode != 0:
            raise RuntimeError(f"the bandwidth sender failed ({sender.returncode})")
        received, seconds = out.split()
        if int(received) != total:
            raise RuntimeError(f"received {received} of {total} bytes")
        return int(received) / float(seconds)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


# ----- output -----------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1e3:.0f} ms" if value < 10 else f"{value:.1f} s"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else ms(value)


def size_name(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def report(  # noqa: PLR0917
    sizes: list[int],
    modes: list[str],
    runs: list[MigrationRun],
    colds: list[ColdRun],
    bw: float,
    bws: list[float],
    args: argparse.Namespace,
) -> None:
    print()
    print(
        f"network {args.pair[0]} -> {args.pair[1]}: one TCP stream of "
        f"{size_name(args.bandwidth_mib)}, median of {len(bws)}: {bw / 1e6:.0f} MB/s "
        f"(runs: {', '.join(f'{b / 1e6:.0f}' for b in bws)} MB/s)"
    )
    print(
        f"process: python, memory touched (non-zero), {args.dirty_mibps} MiB/s dirtied in a "
        f"rolling window, counter printed every 100 ms; request 500m CPU, size + 100Mi memory"
    )
    print(
        f"migrations: {args.runs} per size and mode, back and forth between "
        f"{args.pair[0]} and {args.pair[1]} (explicit target), status polled every "
        f"{POLL * 1e3:.0f} ms; modes interleaved"
    )
    print(
        "cold restart: delete the ServerlessProcess (the operator stops it), wait until it "
        "is gone, create it again pinned to another node (nodeSelector), until the new "
        "process printed that its memory is allocated; state is lost"
    )
    print()
    header = (
        f"{'size':>7}  {'mode':<12} {'ok':>5}  {'downtime p50 / p90 / max':>28}  "
        f"{'total p50 / max':>19}  {'on target p50':>13}  {'dump / send / restore p50':>27}  "
        f"{'transferred p50':>15}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        for mode in modes:
            these = [r for r in runs if r.size == size and r.mode == mode]
            good = [r for r in these if r.ok]
            line = f"{size_name(size):>7}  {mode:<12} {len(good):>2}/{len(these):<2}  "
            if good:
                down = [r.downtime for r in good if r.downtime is not None]
                total = [r.total for r in good if r.total is not None]
                switched = [r.switched for r in good if r.switched is not None]
                moved = [float(r.transferred) for r in good if r.transferred is not None]
                dumps = [r.dump for r in good if r.dump is not None]
                sends = [r.send for r in good if r.send is not None]
                restores = [r.restore for r in good if r.restore is not None]
                line += (
                    f"{ms(pct(down, 50)):>8} / {ms(pct(down, 90)):>7} / {ms(pct(down, 100)):>7}  "
                    f"{ms(pct(total, 50)):>8} / {ms(pct(total, 100)):>8}  "
                    f"{(ms(pct(switched, 50)) if switched else 'n/a'):>13}  "
                    f"{(ms(pct(dumps, 50)) if dumps else 'n/a'):>7} / "
                    f"{(ms(pct(sends, 50)) if sends else 'n/a'):>7} / "
                    f"{(ms(pct(restores, 50)) if restores else 'n/a'):>7}  "
                    f"{pct(moved, 50) / MiB:>11.1f} MiB"
                )
            else:
                line += "no successful migration"
            print(line)
        these_cold = [c for c in colds if c.size == size]
        good_cold = [c for c in these_cold if c.total is not None and not c.problem]
        line = (
            f"{size_name(size):>7}  {'cold restart':<12} {len(good_cold):>2}/{len(these_cold):<2}  "
        )
        if good_cold:
            totals = [c.total for c in good_cold if c.total is not None]
            kills = [c.kill for c in good_cold if c.kill is not None]
            starts = [c.start for c in good_cold if c.start is not None]
            allocs = [c.alloc for c in good_cold if c.alloc is not None]
            line += (
                f"kill -> ready p50 {ms(pct(totals, 50))} (p90 {ms(pct(totals, 90))}, max "
                f"{ms(pct(totals, 100))}); of which delete -> gone {ms(pct(kills, 50))}, "
                f"create -> Running {ms(pct(starts, 50))}, allocation {ms(pct(allocs, 50))}"
            )
        else:
            line += "no successful cold restart"
        print(line)
    print()
    print(
        "  downtime: status.downtimeSeconds (frozen on the source -> running on the target); "
        "total: create -> phase Succeeded seen;\n"
        "  on target: create -> downtime recorded (the target runs it); dump / send: the "
        "source agent's report in status.message;\n"
        "  restore: phase Restoring seen -> downtime recorded (polled, includes the operator's "
        "status writes);\n"
        "  transferred: status.transferredBytes (post-copy: without the memory pulled lazily)"
    )

    print("\ntargets:")
    for size in sizes:
        post = [
            r.downtime
            for r in runs
            if r.size == size and r.mode == "PostCopy" and r.ok and r.downtime is not None
        ]
        if "PostCopy" not in modes:
            print(
                f"  n/a   post-copy downtime p50 <= 100 ms, {size_name(size)}: not supported here"
            )
        elif post:
            p50 = pct(post, 50)
            verdict = "PASS" if p50 <= 0.1 else "MISS"
            print(f"  {verdict}  post-copy downtime p50 <= 100 ms, {size_name(size)}: {ms(p50)}")
        else:
            print(f"  MISS  post-copy downtime p50 <= 100 ms, {size_name(size)}: no successful run")
    for size in sizes:
        limit = 1.5 * size * MiB / bw + 0.2
        total = [
            r.total
            for r in runs
            if r.size == size and r.mode == "StopAndCopy" and r.ok and r.total is not None
        ]
        what = (
            f"stop-and-copy total p50 <= 1.5 x {size_name(size)} / {bw / 1e6:.0f} MB/s "
            f"+ 200 ms = {ms(limit)}, {size_name(size)}"
        )
        if total:
            p50 = pct(total, 50)
            print(f"  {'PASS' if p50 <= limit else 'MISS'}  {what}: {ms(p50)}")
        else:
            print(f"  MISS  {what}: no successful run")
    print("\nfor reference: Cedana reports a 598 ms CRIU dump alone for a 1 GB process")

    failed = [r for r in runs if not r.ok]
    failed_cold = [c for c in colds if c.problem or c.total is None]
    if failed or failed_cold:
        print("\nfailures:")
        for r in failed:
            print(f"  {size_name(r.size)} {r.mode} {r.source} -> {r.target}: {r.problem[:500]}")
        for c in failed_cold:
            print(f"  {size_name(c.size)} cold restart {c.source} -> {c.target}: {c.problem}")


# ----- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,1024", help="process sizes, MiB")
    parser.add_argument("--runs", type=int, default=5, help="migrations per size and mode")
    parser.add_argument("--dirty-mibps", type=int, default=32, help="MiB/s the process dirties")
    parser.add_argument("--bandwidth-mib", type=int, default=1024, help="bytes per TCP stream")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    signal.signal(signal.SIGTERM, on_sigterm)

    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(LOCAL / "kubeconfig")
    )
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    nodes = {
        n["metadata"]["name"]: n
        for n in as_dict(custom.list_cluster_custom_object(GROUP, VERSION, NODES))["items"]
    }
    names = sorted(n for n in nodes if (nodes[n].get("status") or {}).get("endpoint"))
    if len(names) < 2:
        raise SystemExit(f"needs two nodes with agents, found {names}")
    args.pair = pair = (names[0], names[1])
    cold_nodes = (names[2] if len(names) > 2 else names[1], names[0])
    endpoints = {n: nodes[n]["status"]["endpoint"] for n in names}
    features = {
        n: set(
            ((nodes[n]["status"].get("capabilities") or {}).get("criu") or {}).get("features") or []
        )
        for n in pair
    }
    usable = all(
        ((nodes[n]["status"].get("capabilities") or {}).get("criu") or {}).get("usable")
        for n in pair
    )
    if not usable:
        raise SystemExit(f"CRIU is not usable on {pair}: {[nodes[n]['status'] for n in pair]}")
    modes = ["StopAndCopy"]
    if all("lazy-pages" in features[n] for n in pair):
        modes.append("PostCopy")
    print(machine())
    print(
        f"cluster: {len(names)} kwok nodes with real agents; CRIU features on {pair[0]}, "
        f"{pair[1]}: {sorted(features[pair[0]])}, {sorted(features[pair[1]])}"
    )
    if "PostCopy" not in modes:
        print("PostCopy: not supported here (a node lacks CRIU lazy-pages); not run")
    if not all("dirty-tracking" in features[n] for n in pair):
        print("PreCopy: not supported here (no dirty-page tracking on these nodes); not run")
    dirty_pages = max(1, round(args.dirty_mibps * MiB * 0.01 / 4096))
    args.dirty_mibps = round(dirty_pages * 4096 * 100 / MiB, 1)

    namespace = f"bench-mig-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    bench = Bench(custom, core, namespace, endpoints, dirty_pages)
    runs: list[MigrationRun] = []
    colds: list[ColdRun] = []
    aborted: list[str] = []
    started = time.monotonic()
    try:
        bws = []
        dst_ip = endpoints[pair[1]].rsplit(":", 1)[0]
        for _ in range(3):
            bws.append(bandwidth(pair[0], pair[1], dst_ip, args.bandwidth_mib * MiB))
        bw = statistics.median(bws)
        print(f"bandwidth {pair[0]} -> {pair[1]}: {bw / 1e6:.0f} MB/s", flush=True)

        for size in sizes:
            name, cold = f"mig-{size}", f"cold-{size}-0"
            try:
                bench.create_process(name, size)
                bench.create_process(cold, size, node=cold_nodes[0])
                for proc in (name, cold):
                    node = bench.wait_running(proc)["node"]
                    bench.wait(f"{proc} ready", lambda p=proc, n=node: bench.ready_line(p, n), 120)
                where = bench.wait_running(name)["node"]
                if where != pair[0]:
                    setup = bench.migrate(name, size, "StopAndCopy", pair[0])
                    print(
                        f"  {size_name(size)}: placed on {where}; moved to {pair[0]} first "
                        f"(not counted): {setup.phase} {setup.problem}",
                        flush=True,
                    )
                    if not setup.ok:
                        raise RuntimeError(f"could not move {name} to {pair[0]}: {setup.problem}")
                for i in range(args.runs):
                    order = modes if i % 2 == 0 else modes[::-1]
                    for mode in order:
                        node = bench.wait_running(name)["node"]
                        target = pair[1] if node == pair[0] else pair[0]
                        run = bench.migrate(name, size, mode, target)
                        runs.append(run)
                        print(
                            f"  {size_name(size)} {mode:<11} {run.source} -> {run.target}: "
                            f"{'ok' if run.ok else 'FAILED'}  downtime "
                            f"{ms(run.downtime) if run.downtime is not None else '-'}  total "
                            f"{ms(run.total) if run.total is not None else '-'}  transferred "
                            f"{(run.transferred or 0) / MiB:.1f} MiB  (dump {_ms(run.dump)}, send "
                            f"{_ms(run.send)}, restore {_ms(run.restore)})"
                            + (f"  ({run.problem[:300]})" if run.problem else ""),
                            flush=True,
                        )
                        time.sleep(1.0)  # it runs (and dirties its memory) on the target
                    new_cold = f"cold-{size}-{i + 1}"
                    node = bench.wait_running(cold)["node"]
                    target = cold_nodes[1] if node == cold_nodes[0] else cold_nodes[0]
                    c = bench.cold_restart(cold, new_cold, size, target)
                    colds.append(c)
                    cold = new_cold
                    print(
                        f"  {size_name(size)} cold restart {c.source} -> {c.target}: kill -> ready "
                        f"{ms(c.total) if c.total is not None else '-'}"
                        + (f"  ({c.problem})" if c.problem else ""),
                        flush=True,
                    )
            except RuntimeError as exc:  # the process died, a wait timed out: next size
                print(f"  {size_name(size)}: ABORTED: {exc}", flush=True)
                aborted.append(f"{size_name(size)}: {exc}")
            finally:
                for proc in (name, cold):
                    bench.delete_process(proc)
                for proc in (name, cold):
                    bench.wait(f"{proc} gone", lambda p=proc: bench.get(PROCESSES, p) is None, 120)
        report(sizes, modes, runs, colds, bw, bws, args)
        for why in aborted:
            print(f"ABORTED {why}")
        print(f"\n(bench ran {time.monotonic() - started:.0f} s)")
    finally:
        cleanup(bench)


def cleanup(bench: Bench) -> None:
    """Delete what the bench made: processes first (the operator stops them), then
    the namespace."""
    with contextlib.suppress(Exception):
        bench.settle()
    with contextlib.suppress(Exception):
        items = as_dict(
            bench.custom.list_namespaced_custom_object(GROUP, VERSION, bench.namespace, PROCESSES)
        )["items"]
        for item in items:
            bench.delete_process(item["metadata"]["name"])
        bench.wait(
            "the processes gone",
            lambda: (
                not as_dict(
                    bench.custom.list_namespaced_custom_object(
                        GROUP, VERSION, bench.namespace, PROCESSES
                    )
                )["items"]
            ),
            120,
        )
    with contextlib.suppress(ApiException):
        bench.core.delete_namespace(bench.namespace)
    print(f"deleted namespace {bench.namespace}", file=sys.stderr)


if __name__ == "__main__":
    main()
