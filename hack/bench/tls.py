"""What mutual TLS costs on the node agent's channels: plaintext (--insecure) against
mutual TLS (--tls-dir), side by side in one run.

    make bench-tls    (or: .venv/bin/python hack/bench/tls.py [--size-mib 256] [--reps 3]
                                                               [--rpc-calls 2000])

Runs four real agents (real cgroups, PID namespaces, CRIU; needs root): a pair
node-a/node-b with --insecure and a pair with --tls-dir, certificates of one CA.
As in tests/integration/test_agent_migration_tls.py, each agent runs in a private
mount namespace with its own state directory bind-mounted at one shared path
(CRIU restores files at their original paths). Measured, the two modes
alternating (ABBA) so that drift on this shared machine cancels out:

  1. RPC floor: GetProcess of a running process on an established channel, as the
     operator (--rpc-calls calls per mode after a warm-up; p50, p99), and
     connection setup: a new channel (no shared subchannel, no session reuse: a
     full TCP + TLS handshake) and its first GetProcess, --setups times per mode.
  2. Checkpoint transfer: a stop-and-copy migration node-a -> node-b of a process
     holding --size-mib MiB of random memory (under the operator's ticket with
     TLS), then RestoreProcess and FinishMigration on both, as the operator does.
     The figures are the agent's own per-stage timings from the CheckpointProgress
     stream: transfer_seconds (sending the images over ReceiveCheckpoint, the part
     TLS is on) and transferred_bytes (what the target received), after one
     uncounted warm-up migration per mode.

Prints the machine, every repetition, medians, TLS/plain ratios, and a verdict
against the target "TLS costs at most 10% of transfer throughput".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from benchlib import (  # hack/bench/, beside this script
    CLK_TCK,
    cleanup_cgroups,
    cpu_ticks,
    machine,
    pct,
)
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.auth.identity import OPERATOR, Identity
from serverlessos.auth.pki import CA, cert_pem, key_pem, new_key
from serverlessos.auth.tickets import Ticket

ROOT = Path(__file__).resolve().parents[2]
MODES = ("plain", "tls")
NODES = ("node-a", "node-b")
NAMESPACE = "default"
TARGET_COST = 0.10  # TLS may cost at most 10% of transfer throughput
# S MiB of random memory (incompressible, all of it dumped), then idle.
MEMORY = """
import os, time
data = bytearray(os.urandom({size} << 20))
print("ready", flush=True)
time.sleep(3600)
"""


# ----- identities and agents ---------------------------------------------------------


def write_identity(directory: Path, ca: CA, who: Identity) -> Path:
    """ca.pem, cert.pem and key.pem of `who`, issued by `ca` (as the TLS tests do)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key()
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "cert.pem").write_bytes(cert_pem(ca.issue(key.public_key(), who)))
    (directory / "key.pem").write_bytes(key_pem(key))
    os.chmod(directory / "key.pem", 0o600)
    return directory


@dataclass
class Agent:
    """One `serverlessos-agent serve` in its own mount namespace, and the operator's
    channel to it."""

    mode: str
    node: str
    own: Path  # its state directory as the host sees it
    shared: Path  # ... and as the agent sees it
    cgroup_root: str
    client_tls: Path | None  # the operator's identity (TLS mode)
    proc: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    channel: grpc.Channel | None = None
    stub: pb_grpc.AgentStub = field(init=False)

    def command(self, criu: str, tls_dir: Path | None) -> list[str]:
        wrap = [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
            'mount --bind "$1" "$2" && shift 2 && exec "$@"',
            *("sh", str(self.own), str(self.shared)),
        ]
        security = ["--tls-dir", str(tls_dir)] if tls_dir else ["--insecure"]
        return [
            *wrap,
            *(sys.executable, "-m", "serverlessos_agent.cli.main", "serve"),
            *("--node-name", self.node, "--listen", "127.0.0.1:0"),
            *("--state-dir", str(self.shared), "--cgroup-root", self.cgroup_root),
            *("--criu", criu, *security),
        ]

    def start(self, criu: str, tls_dir: Path | None, timeout: float = 30.0) -> None:
        log_path = self.own / "agent.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(criu, tls_dir), stdout=log, stderr=log, start_new_session=True
            )
        ready = self.own / "agent.json"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self} did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        self.endpoint = json.loads(ready.read_text())["grpc"]
        self.channel = self.connect()
        self.stub = pb_grpc.AgentStub(self.channel)

    def connect(self, options: list[tuple[str, int | str]] | None = None) -> grpc.Channel:
        """A new channel as the operator: plaintext, or mutual TLS expecting this node."""
        options = list(options or [])
        if self.client_tls is None:
            return grpc.insecure_channel(self.endpoint, options)
        tls = self.client_tls
        credentials = grpc.ssl_channel_credentials(
            (tls / "ca.pem").read_bytes(),
            (tls / "key.pem").read_bytes(),
            (tls / "cert.pem").read_bytes(),
        )
        name = identity.node(self.node).tls_name
        return grpc.secure_channel(
            self.endpoint, credentials, [*options, ("grpc.ssl_target_name_override", name)]
        )

    def host_path(self, path: str) -> Path:
        """A path the agent reports (its view) as the host sees it."""
        return self.own / Path(path).relative_to(self.shared)

    def kill(self) -> None:
        """SIGKILL to the agent's process group (it, and a CRIU it may be running)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __str__(self) -> str:
        return f"agent {self.node} ({self.mode})"


@contextlib.contextmanager
def agents(criu: str) -> Iterator[tuple[dict[str, dict[str, Agent]], CA]]:
    """Both pairs, by mode then node, and their CA; everything they made is gone after."""
    tmp = Path(tempfile.mkdtemp(prefix="sos-bench-tls-"))
    tag = uuid.uuid4().hex[:8]
    shared = tmp / "node-state"
    shared.mkdir()
    ca = CA.create()
    operator = write_identity(tmp / "operator", ca, OPERATOR)
    made: list[Agent] = []
    try:
        pairs: dict[str, dict[str, Agent]] = {}
        for mode in MODES:
            pairs[mode] = {}
            for node in NODES:
                own = tmp / f"{mode}-{node}-state"
                own.mkdir()
                tls = mode == "tls"
                tls_dir = (
                    write_identity(tmp / f"{node}-tls", ca, identity.node(node)) if tls else None
                )
                agent = Agent(
                    mode,
                    node,
                    own,
                    shared,
                    f"sos-bench-tls-{tag}-{mode}-{node}",
                    operator if tls else None,
                )
                made.append(agent)
                agent.start(criu, tls_dir)
                pairs[mode][node] = agent
        yield pairs, ca
    finally:
        for agent in made:
            agent.kill()
        for agent in made:
            cleanup_cgroups(agent.cgroup_root)
        shutil.rmtree(tmp, ignore_errors=True)


def criu_binary() -> str:
    """CRIU as the tests get it (hack/install-criu.sh: cached, fast when warm)."""
    script = ROOT / "hack" / "install-criu.sh"
    out = subprocess.run([str(script)], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def alternating(reps: int) -> Iterator[tuple[int, str]]:
    """(repetition, mode) in ABBA order: plain tls, tls plain, plain tls, ..."""
    for i in range(reps):
        for mode in MODES if i % 2 == 0 else reversed(MODES):
            yield i, mode


def run(agent: Agent, name: str, argv: list[str], memory: int = 0) -> pb.Process:
    spec = pb.ProcessSpec(
        name=name,
        owner=pb.Owner(namespace=NAMESPACE, uid="uid-" + name),
        argv=argv,
        resources=pb.Resources(memory_bytes=memory),
        restart_policy=pb.RESTART_POLICY_NEVER,
    )
    process = agent.stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=30)
    if process.state != pb.PROCESS_STATE_RUNNING:
        raise RuntimeError(f"{name} did not run on {agent}: {process}")
    return process


def ref(name: str) -> pb.ProcessRef:
    return pb.ProcessRef(namespace=NAMESPACE, name=name)


# ----- 1. the RPC floor --------------------------------------------------------------


def timed_calls(call: Callable[[], object], n: int) -> list[float]:
    """n calls, each one's latency in microseconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        call()
        out.append((time.perf_counter_ns() - t) / 1e3)
    return out


def rpc_floor(pairs: dict[str, dict[str, Agent]], calls: int, setups: int) -> None:
    get: dict[str, Callable[[], object]] = {}
    for mode in MODES:
        agent = pairs[mode]["node-a"]
        run(agent, "idle", ["sleep", "3600"])
        get[mode] = functools.partial(
            agent.stub.GetProcess, pb.GetProcessRequest(ref=ref("idle")), timeout=10
        )
        timed_calls(get[mode], 200)  # warm-up

    blocks = 20
    latency: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i, mode in alternating(blocks):
        latency[mode] += timed_calls(get[mode], calls // blocks + (i < calls % blocks))

    # A fresh connection each time: its own subchannel (not the process-wide pool's
    # connection the established channel holds); gRPC keeps no TLS session cache
    # unless asked, so every TLS setup is a full handshake.
    setup: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _, mode in alternating(setups):
        agent = pairs[mode]["node-a"]
        t = time.perf_counter_ns()
        with agent.connect([("grpc.use_local_subchannel_pool", 1)]) as channel:
            pb_grpc.AgentStub(channel).GetProcess(pb.GetProcessRequest(ref=ref("idle")), timeout=10)
            setup[mode].append((time.perf_counter_ns() - t) / 1e3)

    print(f"\n1. RPC floor: GetProcess as the operator, {calls} calls per mode (after 200 warm-up)")
    for mode in MODES:
        p50, p99 = pct(latency[mode], 50), pct(latency[mode], 99)
        print(f"  {mode:5}  p50 {p50:8.1f} us   p99 {p99:8.1f} us")
    ratio = pct(latency["tls"], 50) / pct(latency["plain"], 50)
    print(f"  TLS/plain p50 ratio  {ratio:.2f}x")
    print(f"\n   connection setup: new channel + first GetProcess, {setups} per mode")
    for mode in MODES:
        print(
            f"  {mode:5}  p50 {pct(setup[mode], 50) / 1e3:8.2f} ms   "
            f"p99 {pct(setup[mode], 99) / 1e3:8.2f} ms"
        )
    ratio = pct(setup["tls"], 50) / pct(setup["plain"], 50)
    print(f"  TLS/plain p50 ratio  {ratio:.2f}x")


# ----- 2. checkpoint transfer --------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """One stop-and-copy migration, as the source agent reported it."""

    dump_s: float
    transfer_s: float
    transferred: int  # bytes the target received
    memory: int  # bytes of memory pages in the checkpoint
    call_s: float  # the whole CheckpointProcess call, as the client saw it
    restore_s: float
    cpu_s: float  # both agents' CPU time during CheckpointProcess (not CRIU's)

    @property
    def mb_per_s(self) -> float:
        return self.transferred / self.transfer_s / 1e6


def wait_ready(agent: Agent, process: pb.Process, timeout: float = 60.0) -> None:
    log = agent.host_path(process.log_path)
    deadline = time.monotonic() + timeout
    while not (log.exists() and "ready" in log.read_text()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.spec.name} never got its memory: {log.read_text()}")
        time.sleep(0.05)


def migrate(pair: dict[str, Agent], ca: CA, name: str, size_mib: int) -> Move:
    a, b = pair["node-a"], pair["node-b"]
    assert a.proc is not None and b.proc is not None
    program = MEMORY.format(size=size_mib)
    process = run(a, name, ["python3", "-c", program], memory=(2 * size_mib + 128) << 20)
    wait_ready(a, process)
    migration_id = f"bench-{name}"
    ticket = Ticket.issue(
        ca.key,
        migration_id=migration_id,
        namespace=NAMESPACE,
        name=name,
        process_uid=process.spec.owner.uid,
        source=a.node,
        target=b.node,
    )  # a plaintext agent checks nothing, and sends no ticket on
    request = pb.CheckpointProcessRequest(
        ref=ref(name),
        migration_id=migration_id,
        target_endpoint=b.endpoint,
        mode=pb.MIGRATION_MODE_STOP_AND_COPY,
        target_node=b.node,
        ticket=ticket,
    )
    os.sync()  # no writeback of the last repetition's checkpoint during this one
    cpu = cpu_ticks(a.proc.pid) + cpu_ticks(b.proc.pid)
    t = time.perf_counter()
    progress = list(a.stub.CheckpointProcess(request, timeout=900))
    call_s = time.perf_counter() - t
    cpu_s = (cpu_ticks(a.proc.pid) + cpu_ticks(b.proc.pid) - cpu) / CLK_TCK
    last = progress[-1]
    if last.stage != pb.CheckpointProgress.STAGE_TRANSFERRED:
        raise RuntimeError(f"{name}: the checkpoint did not arrive: {last}")

    t = time.perf_counter()
    restored = b.stub.RestoreProcess(
        pb.RestoreProcessRequest(migration_id=migration_id), timeout=120
    )
    restore_s = time.perf_counter() - t
    if restored.process.state != pb.PROCESS_STATE_RUNNING:
        raise RuntimeError(f"{name} was not restored on {b}: {restored.process}")
    for agent in (a, b):  # commit on the source, then on the target, as the operator does
        finish = pb.FinishMigrationRequest(migration_id=migration_id, ref=ref(name), commit=True)
        agent.stub.FinishMigration(finish, timeout=120)
    b.stub.StopProcess(pb.StopProcessRequest(ref=ref(name), grace_period_seconds=0), timeout=60)
    return Move(
        dump_s=last.dump_seconds,
        transfer_s=last.transfer_seconds,
        transferred=last.transferred_bytes,
        memory=last.memory_bytes,
        call_s=call_s,
        restore_s=restore_s,
        cpu_s=cpu_s,
    )


def transfer(pairs: dict[str, dict[str, Agent]], ca: CA, size_mib: int, reps: int) -> None:
    print(
        f"\n2. Checkpoint transfer: stop-and-copy node-a -> node-b of {size_mib} MiB of random "
        f"memory, {reps} per mode"
    )
    print("   (dump, transfer: the source agent's CheckpointProgress timings; MB = 10^6 bytes)")
    for mode in MODES:  # warm-up, not counted: CRIU's first run, the page cache, the channel
        migrate(pairs[mode], ca, f"warm-{mode}", min(size_mib, 16))
    moves: dict[str, list[Move]] = {mode: [] for mode in MODES}
    for i, mode in alternating(reps):
        m = migrate(pairs[mode], ca, f"mem-{mode}-{i}", size_mib)
        moves[mode].append(m)
        print(
            f"  rep {i + 1} {mode:5}  dump {m.dump_s:5.2f} s  transfer {m.transfer_s:5.2f} s  "
            f"{m.transferred / 1e6:6.1f} MB ({m.memory / 2**20:.0f} MiB pages)  "
            f"{m.mb_per_s:6.1f} MB/s   restore {m.restore_s:5.2f} s   "
            f"call {m.call_s:5.2f} s   agents' CPU {m.cpu_s:5.2f} s",
            flush=True,
        )

    print_medians(moves, reps)


def print_medians(moves: dict[str, list[Move]], reps: int) -> None:
    print("  medians (min-max):")
    rates = {mode: [m.mb_per_s for m in moves[mode]] for mode in MODES}
    median = {mode: statistics.median(rates[mode]) for mode in MODES}
    for mode in MODES:
        ms = moves[mode]
        print(
            f"  {mode:5}  transfer {statistics.median(m.transfer_s for m in ms):5.2f} s   "
            f"{median[mode]:6.1f} MB/s ({min(rates[mode]):.0f}-{max(rates[mode]):.0f})   "
            f"dump {statistics.median(m.dump_s for m in ms):5.2f} s   "
            f"restore {statistics.median(m.restore_s for m in ms):5.2f} s   "
            f"agents' CPU {statistics.median(m.cpu_s for m in ms):5.2f} s"
        )
    ratio = median["tls"] / median["plain"]
    cost = 1 - ratio
    print(f"  TLS/plain throughput ratio  {ratio:.3f}  (TLS costs {cost:.1%} of throughput)")
    # Each repetition's two runs were back to back (ABBA): their ratio sees the least drift.
    paired = [t.mb_per_s / p.mb_per_s for t, p in zip(moves["tls"], moves["plain"], strict=True)]
    print(
        f"  paired, each repetition's TLS/plain: {' '.join(f'{r:.2f}' for r in paired)}"
        f"  (median {statistics.median(paired):.3f})"
    )
    verdict = "MET" if cost <= TARGET_COST else "MISSED"
    overlap = max(rates["tls"]) >= min(rates["plain"]) and max(rates["plain"]) >= min(rates["tls"])
    print(
        f'\nverdict: target "TLS costs at most {TARGET_COST:.0%} of transfer throughput" '
        f"{verdict}: {median['tls']:.0f} MB/s with TLS against {median['plain']:.0f} MB/s "
        f"plaintext ({cost:.1%} cost, medians of {reps})"
        + ("; the modes' ranges overlap, more --reps to be sure" if overlap else "")
    )


# ----- main --------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # to the cleanup in agents()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256, help="memory of the migrated process")
    parser.add_argument("--reps", type=int, default=3, help="migrations per mode")
    parser.add_argument("--rpc-calls", type=int, default=2000, help="GetProcess calls per mode")
    parser.add_argument("--setups", type=int, default=50, help="new connections per mode")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the TLS benchmark needs root (cgroups, PID namespaces, CRIU)")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)  # Ctrl-C too, also where a shell ignores it

    criu = criu_binary()
    print(machine())
    criu_version = subprocess.run(
        [criu, "--version"], check=True, capture_output=True, text=True
    ).stdout
    aes = " aes " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    print(
        f"grpc {grpc.__version__} (BoringSSL), CRIU {criu_version.split()[-1]}, "
        f"AES-NI {'yes' if aes else 'no'}; keys: EC P-256, client = operator identity"
    )
    with agents(criu) as (pairs, ca):
        rpc_floor(pairs, args.rpc_calls, args.setups)
        transfer(pairs, ca, args.size_mib, args.reps)


if __name__ == "__main__":
    main()
