"""Confined start: the agent's StartProcess beside `crun run` of the same command.

    make bench-start   (or: .venv/bin/python hack/bench/start.py [--reps 200] [--warmup 10])

Needs root. Side by side in one run, interleaved (agent, crun, agent, crun...) after
a warm-up, because these machines are shared and noisy:

A. a real agent (started as tests/integration/conftest.py's AgentProcess starts
   one), StartProcess of /bin/true with restart policy NEVER as uid 1000: its own
   user (0..65535 -> host 100000..), mount and PID namespaces, read-only /usr and
   /etc, no capabilities, no_new_privs, the RuntimeDefault seccomp profile.
   'start' is StartProcess until its reply (sent once the process has exec'd);
   'start to exit' is until the agent first says SUCCEEDED: in that reply (when
   the exit was handled before it was sent) or in GetProcess, polled back to back.
   Each process is then removed (StopProcess), untimed.
B. `crun run` (Debian's, hack/install-crun.sh) of /bin/true in a bundle built to
   match: a skeleton rootfs with read-only binds of /usr and /etc and the host's
   /bin, /lib... links, read-only /sys, a private /tmp, /proc, /dev, a writable
   /work; the same id map, uid 1000 gid 0, no capabilities, noNewPrivileges, user
   + mount + PID namespaces only, a cgroup of its own; crun's default spec's
   seccomp (it has none: said in the output). Wall clock of `crun run --bundle B
   <id>`, which runs to exit and deletes the container. The bundle is made once.
   crun refuses a hybrid cgroup hierarchy whose cgroup2 part has controllers;
   there it runs in a private mount namespace without /sys/fs/cgroup/unified
   (Runner). If it cannot run this bundle (no user namespace), it falls back to
   crun's default root spec, labelled so.

Prints the machine, the figures (p50/p90) and agent-start p50 / crun p50 against
the target "confined start p50 no slower than crun's". Everything it makes (agent,
cgroups, state directories, crun containers, bundle) is removed, also on errors
and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from benchlib import cleanup_cgroups, machine, pct  # hack/bench/, beside this script
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos_agent.cgroup import cgroup_mounts

REPO = Path(__file__).resolve().parents[2]
COMMAND = ["/bin/true"]
UID, GID = 1000, 0  # the agent's gid is run_as_group's, 0 when unset
HOST_ID_BASE, ID_RANGE = 100000, 65536  # as runtime/sandbox.py maps every process
NAMESPACE = "bench"
LIBRARY_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
CLONE_NEWNS, MS_REC, MS_SLAVE, MNT_DETACH = 0x00020000, 16384, 1 << 19, 2


# ----- machine --------------------------------------------------------------


def physical_cores() -> int:
    cores, phys = set(), "0"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            phys = value.strip()
        elif key.strip() == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or (os.cpu_count() or 0)


# ----- cleanup --------------------------------------------------------------


def _terminate_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ----- A: the agent ---------------------------------------------------------


class Agent:
    """`serverlessos-agent serve`, with conftest.AgentProcess's flags."""

    def __init__(self, state_dir: Path, cgroup_root: str) -> None:
        self.state_dir, self.cgroup_root = state_dir, cgroup_root
        self.log_path = state_dir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self, timeout: float = 30.0) -> pb_grpc.AgentStub:
        cmd = [
            sys.executable,
            "-m",
            "serverlessos_agent.cli.main",
            "serve",
            "--node-name",
            "bench",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--state-dir",
            str(self.state_dir),
            "--cgroup-root",
            self.cgroup_root,
            "--stats-interval",
            "0.5",
            "--restart-backoff",
            "0.2",
            "--restart-backoff-max",
            "1",
            "--insecure",  # the figures are the agent's own, without TLS
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        ready = self.state_dir / "agent.json"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready in {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        endpoint = json.loads(ready.read_text())["grpc"]
        self.channel = grpc.insecure_channel(endpoint)
        return pb_grpc.AgentStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        cleanup_cgroups(self.cgroup_root)


@dataclass(frozen=True)
class AgentStart:
    start_ms: float  # StartProcess sent -> its reply
    exit_ms: float  # StartProcess sent -> the agent says SUCCEEDED
    rpc_ms: float  # one GetProcess afterwards: the RPC floor
    ended_in_reply: bool
    phases: tuple[float, float, float]  # request -> record, record -> exec, exec -> reply


def agent_once(stub: pb_grpc.AgentStub, name: str) -> AgentStart:
    """One start of COMMAND through the agent; the process is removed after."""
    spec = pb.ProcessSpec(
        name=name,
        owner=pb.Owner(namespace=NAMESPACE, uid="uid-" + name),
        argv=COMMAND,
        restart_policy=pb.RESTART_POLICY_NEVER,
        security=pb.SecurityContext(run_as_user=UID),
    )
    ref = pb.ProcessRef(namespace=NAMESPACE, name=name)
    get = pb.GetProcessRequest(ref=ref)
    w0, t0 = time.time(), time.perf_counter()
    reply = stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=30)
    t1, w1 = time.perf_counter(), time.time()
    # The agent's own clocks (same machine): the record made, the shim saw the exec.
    created = reply.created_at.seconds + reply.created_at.nanos / 1e9
    started = reply.started_at.seconds + reply.started_at.nanos / 1e9
    phases = ((created - w0) * 1e3, (started - created) * 1e3, (w1 - started) * 1e3)
    try:
        if reply.state not in (pb.PROCESS_STATE_RUNNING, pb.PROCESS_STATE_SUCCEEDED):
            raise RuntimeError(f"{name} did not start: {reply}")
        # Ended: the first time the agent says SUCCEEDED, in StartProcess's reply
        # (the process exited before it was sent) or in a GetProcess polled back to back.
        t2 = t1 if reply.state == pb.PROCESS_STATE_SUCCEEDED else 0.0
        while True:
            p = stub.GetProcess(get, timeout=10)
            t3 = time.perf_counter()
            if p.state == pb.PROCESS_STATE_SUCCEEDED:
                t2 = t2 or t3
                break
            if p.state != pb.PROCESS_STATE_RUNNING or t2:
                raise RuntimeError(f"{name} did not succeed: {p}")
            if t3 - t0 > 30:
                raise RuntimeError(f"{name} did not exit in 30 s: {p}")
        t4 = time.perf_counter()
        stub.GetProcess(get, timeout=10)
        rpc = (time.perf_counter() - t4) * 1e3
    finally:
        stub.StopProcess(pb.StopProcessRequest(ref=ref, grace_period_seconds=0), timeout=60)
    return AgentStart(
        (t1 - t0) * 1e3,
        (t2 - t0) * 1e3,
        rpc,
        reply.state == pb.PROCESS_STATE_SUCCEEDED,
        phases,
    )


# ----- B: crun --------------------------------------------------------------


def install_crun() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "install-crun.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def crun_command(wrapper: Path) -> tuple[list[str], dict[str, str]]:
    """The real crun binary and its environment, as hack/install-crun.sh's wrapper
    would exec it: timed without the wrapper's /bin/sh in front."""
    prefix = wrapper.resolve().parent.parent
    real = prefix / "usr" / "bin" / "crun"
    libdirs = sorted(prefix.glob("usr/lib/*/libyajl.so.2"))
    if not real.is_file() or len(libdirs) != 1:
        return [str(wrapper)], dict(os.environ)  # not our layout: use it as it is
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(
        [str(libdirs[0].parent), *filter(None, [env.get("LD_LIBRARY_PATH", "")])]
    )
    return [str(real)], env


class Runner:
    """A helper process (this script, --runner) that runs and times commands in a
    private mount namespace. crun refuses a hybrid cgroup hierarchy whose cgroup2
    part has controllers ("cgroups in hybrid mode not supported"); in there, if so,
    /sys/fs/cgroup/unified is unmounted, so crun sees a cgroup v1 host and makes its
    cgroups in the v1 hierarchies, as the agent does. The host is not touched (the
    agent runs outside). Its own session: Ctrl-C does not reach it or its crun runs."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.hello: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crun runner exited ({self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the crun runner: {reply['error']}")
        return reply

    def run(self, argv: list[str], cwd: Path | None = None) -> dict[str, Any]:
        """{"rc", "stdout", "stderr", "ms"}: argv's exit, output and wall clock."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd or "/")}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def runner_main() -> None:
    """--runner: a private mount namespace (without a cgroup2 hierarchy that has
    controllers), then one JSON request per line: run argv, reply with its result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up, through us
    out = sys.stdout
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_SLAVE), None) != 0:
            raise OSError(ctypes.get_errno(), "making / a slave mount")
        unified = Path("/sys/fs/cgroup/unified")
        controllers = ""
        if unified_is_cgroup2(unified):
            controllers = (unified / "cgroup.controllers").read_text().strip()
            if controllers and libc.umount2(bytes(unified), MNT_DETACH) != 0:
                raise OSError(ctypes.get_errno(), f"umount {unified}")
    except OSError as exc:
        out.write(json.dumps({"error": f"{exc.filename or ''} {exc.strerror}"}) + "\n")
        out.flush()
        return
    out.write(json.dumps({"hidden_unified": controllers}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        t0 = time.perf_counter()
        done = subprocess.run(
            request["argv"],
            check=False,
            cwd=request["cwd"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        ms = (time.perf_counter() - t0) * 1e3
        reply = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "ms": ms}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def unified_is_cgroup2(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path) and fields[fields.index("-") + 1] == "cgroup2":
            return True
    return False


class Crun:
    def __init__(self, wrapper: Path, work: Path, cgroup_root: str) -> None:
        self.cmd, self.env = crun_command(wrapper)
        self.work, self.cgroup_root = work, cgroup_root
        self.state = work / "state"  # crun --root: its containers' state, ours alone
        self.bundle = work / "bundle"
        self.seccomp = "none"
        self.userns = True
        self.spec: dict[str, Any] = {}
        self.runner: Runner | None = None

    def start_runner(self) -> str:
        """Start the runner; what it hid ("" = nothing)."""
        self.runner = Runner(self.env)
        return str(self.runner.hello["hidden_unified"])

    def crun(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        assert self.runner is not None
        return self.runner.run([*self.cmd, "--root", str(self.state), *args], cwd)

    def version(self) -> str:
        out = self.crun("--version")
        return str(out["stdout"]).splitlines()[0].removeprefix("crun version ")

    def default_spec(self, rootless: bool) -> dict[str, Any]:
        self.bundle.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.bundle / "config.json").unlink()
        done = self.crun("spec", *(["--rootless"] if rootless else []), cwd=self.bundle)
        if done["rc"] != 0:
            raise RuntimeError(f"crun spec failed: {done['stderr']}")
        spec: dict[str, Any] = json.loads((self.bundle / "config.json").read_text())
        self.seccomp = "set by crun spec" if "seccomp" in spec.get("linux", {}) else "none"
        return spec

    def make_rootfs(self) -> None:
        rootfs = self.bundle / "rootfs"
        for name in ("proc", "dev", "sys", "tmp", "usr", "etc", "work"):
            (rootfs / name).mkdir(parents=True, exist_ok=True)
        for name in LIBRARY_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                (rootfs / name).symlink_to(os.readlink(host))
            elif host.is_dir():  # not merged /usr: bound like /usr (see confined_spec)
                (rootfs / name).mkdir()
        workdir = self.bundle / "work"  # the process's own writable directory, at /work
        workdir.mkdir(exist_ok=True)
        os.chown(workdir, HOST_ID_BASE + UID, HOST_ID_BASE + GID)

    def confined_spec(self) -> dict[str, Any]:
        spec = self.default_spec(rootless=True)
        process = spec["process"]
        process["terminal"] = False
        process["args"] = COMMAND
        process["cwd"] = "/work"
        process["user"] = {"uid": UID, "gid": GID}
        process["capabilities"] = {
            k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        process["noNewPrivileges"] = True
        process.pop("rlimits", None)  # the agent sets none
        spec.pop("hostname", None)  # no UTS namespace
        ro = ["rbind", "ro", "nosuid", "nodev"]
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"],
            },
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            {"destination": "/etc", "type": "bind", "source": "/etc", "options": ro},
        ]
        for name in LIBRARY_DIRS:
            host = Path("/") / name
            if not host.is_symlink() and host.is_dir():
                mounts.append(
                    {"destination": f"/{name}", "type": "bind", "source": str(host), "options": ro}
                )
        mounts += [
            # /sys alone (no submounts), as the agent binds it.
            {
                "destination": "/sys",
                "type": "bind",
                "source": "/sys",
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=64m"],
            },
            {
                "destination": "/work",
                "type": "bind",
                "source": str(self.bundle / "work"),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
        ]
        spec["mounts"] = mounts
        spec["root"] = {"path": "rootfs", "readonly": True}
        linux = spec["linux"]
        linux["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "user"}]
        mapping = [{"containerID": 0, "hostID": HOST_ID_BASE, "size": ID_RANGE}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
        # The agent's tree has neither: its /proc is unmasked, its /dev holds five
        # devices (crun makes its own default set), no device cgroup rule.
        linux.pop("maskedPaths", None)
        linux.pop("readonlyPaths", None)
        linux.pop("resources", None)
        return spec

    def plain_spec(self) -> dict[str, Any]:
        """The fallback: crun's default (root) spec, /bin/true in the same rootfs."""
        spec = self.default_spec(rootless=False)
        spec["process"]["terminal"] = False
        spec["process"]["args"] = COMMAND
        ro = ["rbind", "ro", "nosuid", "nodev"]
        spec["mounts"] += [
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            {"destination": "/etc", "type": "bind", "source": "/etc", "options": ro},
        ]
        return spec

    def setup(self) -> str:
        """Write the confined bundle, or the plain one if crun cannot run it here;
        '' or why it fell back."""
        self.state.mkdir(parents=True, exist_ok=True)
        self.make_rootfs()
        self.spec = self.confined_spec()
        try:
            self.run("probe")
            return ""
        except RuntimeError as exc:
            why = str(exc)
        self.userns = False
        self.spec = self.plain_spec()
        self.run("probe-plain")
        return why

    def run(self, name: str) -> float:
        """Wall clock ms of `crun run --bundle B <id>` (runs to exit, then deletes)."""
        cid = f"{name}-{uuid.uuid4().hex[:6]}"
        # A cgroup per container, as the agent makes one per process, in our subtree.
        self.spec.setdefault("linux", {})["cgroupsPath"] = f"/{self.cgroup_root}/{cid}"
        (self.bundle / "config.json").write_text(json.dumps(self.spec))
        done = self.crun("run", "--bundle", str(self.bundle), cid)
        if done["rc"] != 0:
            raise RuntimeError(f"crun run exited {done['rc']}: {str(done['stderr']).strip()}")
        return float(done["ms"])

    def close(self) -> None:
        """Delete what crun left (through the runner, where crun accepts the cgroup
        hierarchy), the cgroups and the bundle, then stop the runner."""
        if self.runner is not None and self.runner.alive() and self.state.exists():
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                for cid in str(self.crun("list", "-q")["stdout"]).split():
                    self.crun("delete", "-f", cid)
        if self.runner is not None:
            self.runner.close()
        cleanup_cgroups(self.cgroup_root)
        shutil.rmtree(self.work, ignore_errors=True)


# ----- context --------------------------------------------------------------


def cgroup_attach_ms(root: str, samples: int = 20) -> list[float]:
    """What both pay once per start: moving a new process into its cgroups (v1: one
    cgroup.procs write per hierarchy). The first write of a migration waits for the
    kernel (cgroup_threadgroup_rwsem: an RCU grace period); the ms of that write."""
    v1, _ = cgroup_mounts()
    hierarchy = v1.get("cpu") or next(iter(v1.values()), None)
    if hierarchy is None:
        return []
    group = hierarchy / root
    group.mkdir()
    out = []
    try:
        for _ in range(samples):
            child = subprocess.Popen(["sleep", "1"])
            t0 = time.perf_counter()
            (group / "cgroup.procs").write_text(str(child.pid))
            out.append((time.perf_counter() - t0) * 1e3)
            child.kill()
            child.wait()
            time.sleep(0.02)
    finally:
        cleanup_cgroups(root)
    return out


# ----- main -----------------------------------------------------------------


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    old = {s: signal.signal(s, _terminate_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def report(label: str, values: list[float], extra: str = "") -> None:
    print(f"  {label:<40} p50 {pct(values, 50):7.2f} ms   p90 {pct(values, 90):7.2f} ms{extra}")


def main() -> None:
    if sys.argv[1:] == ["--runner"]:  # Runner's helper process
        runner_main()
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=200, help="measured starts of each kind")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured starts of each kind")
    parser.add_argument("--crun", type=Path, help="crun binary (default: hack/install-crun.sh)")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="MS",
        help="idle this long before each timed start (default 0: back to back). Moving a "
        "process into a cgroup waits for an RCU grace period unless another move "
        "happened within about one: with 0, a start right after the other kind's "
        "may skip that wait; with e.g. 30 every start of both kinds pays it",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the start benchmark needs root (cgroups, namespaces, crun)")

    wrapper = args.crun or install_crun()
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="sos-bench-start-"))
    agent = Agent(work / "agent", f"sos-bench-{tag}")
    agent.state_dir.mkdir()
    crun = Crun(wrapper, work / "crun", f"sos-bench-crun-{tag}")
    interrupted = False
    with signals_as_interrupts():
        try:
            print(machine())
            print(f"cores: {physical_cores()} physical, {os.cpu_count()} logical")
            hidden = crun.start_runner()
            print(f"crun: {crun.version()} ({' '.join(crun.cmd)})")
            if hidden:
                print(
                    "crun: run in a private mount namespace without /sys/fs/cgroup/unified "
                    f"(a hybrid hierarchy; cgroup2 has controllers: {hidden}, which crun "
                    "refuses): its cgroups are v1 ones, like the agent's"
                )
            fallback = crun.setup()
            stub = agent.start()

            for i in range(args.warmup):
                agent_once(stub, f"warm-{i}")
                crun.run(f"warm-{i}")
            runs: list[AgentStart] = []
            crun_ms: list[float] = []
            settle = args.settle / 1e3
            for i in range(args.reps):
                time.sleep(settle)
                runs.append(agent_once(stub, f"start-{i}"))
                time.sleep(settle)
                crun_ms.append(crun.run(f"run-{i}"))
            start_ms = [r.start_ms for r in runs]
            exit_ms = [r.exit_ms for r in runs]

            print(
                f"\n{args.reps} starts of each, interleaved (agent, crun, ...), "
                f"after {args.warmup} of each unmeasured; {COMMAND[0]} as uid {UID}"
                + (f"; {args.settle:g} ms idle before each" if args.settle else "")
                + ":"
            )
            print("A. agent StartProcess (user+mount+PID ns, seccomp RuntimeDefault, no caps):")
            report("start (reply, after exec)", start_ms)
            in_reply = sum(r.ended_in_reply for r in runs)
            report(
                "start to exit (SUCCEEDED seen)",
                exit_ms,
                f"   ({in_reply}/{len(runs)} already in the reply)",
            )
            report("GetProcess RPC (the gRPC floor)", [r.rpc_ms for r in runs])
            print("  where a start's time goes (the agent's timestamps in the reply), p50:")
            for k, what in enumerate(
                (
                    "request sent -> record created",
                    "record created -> exec'd (shim)",
                    "exec'd -> reply received",
                )
            ):
                print(f"    {what:<38} {pct([r.phases[k] for r in runs], 50):7.2f} ms")
            if crun.userns:
                print(
                    "B. crun run (user+mount+PID ns, no caps, noNewPrivileges, "
                    f"seccomp: {crun.seccomp}):"
                )
                label = "crun run, start to exit"
            else:
                print(f"B. FALLBACK: crun cannot run the confined bundle here ({fallback});")
                print(
                    f"   plain `crun run` of crun's default (root) spec, seccomp: {crun.seccomp}:"
                )
                label = "crun run (DEFAULT ROOT SPEC)"
            report(label, crun_ms)
            attach = cgroup_attach_ms(f"sos-bench-attach-{tag}")
            if attach:
                print("context: both move each new process into v1 cgroups (cgroup.procs):")
                report(
                    "first cgroup.procs write, 20 ms apart",
                    attach,
                    "   (may wait an RCU grace period)",
                )
            ratio = pct(start_ms, 50) / pct(crun_ms, 50)
            exit_ratio = pct(exit_ms, 50) / pct(crun_ms, 50)
            print(f"\nratio agent start p50 / crun p50          {ratio:5.2f}x")
            print(f"ratio agent start-to-exit p50 / crun p50  {exit_ratio:5.2f}x")
            verdict = "MET" if ratio <= 1.0 else "NOT MET"
            print(
                f"verdict: {verdict}: confined start p50 {pct(start_ms, 50):.2f} ms vs crun's "
                f"{pct(crun_ms, 50):.2f} ms (target: no slower than crun's)"
                + ("" if crun.userns else " [against crun WITHOUT a user namespace]")
            )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
            try:
                agent.close()
            finally:
                crun.close()
                cleanup_cgroups(f"sos-bench-attach-{tag}")
                shutil.rmtree(work, ignore_errors=True)
                signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        raise SystemExit("interrupted; cleaned up")


if __name__ == "__main__":
    main()
