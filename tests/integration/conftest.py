"""Shared fixtures: a real agent process on real cgroups, cleaned up afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos_agent.cgroup import cgroup_mounts

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: real cgroups and PID namespaces")


class AgentProcess:
    """One `serverlessos-agent serve` process and a client for it."""

    def __init__(
        self,
        state_dir: Path,
        cgroup_root: str,
        extra: list[str],
        wrap: list[str],
        client_tls: Path | None = None,
    ):
        self.state_dir = state_dir
        self.client_tls = client_tls  # a directory with ca.pem, cert.pem, key.pem: mTLS
        self.cgroup_root = cgroup_root
        self.extra = extra
        self.wrap = wrap  # e.g. setpriv ... to run the agent with fewer privileges
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.AgentStub
        self.endpoint = ""
        self.metrics = ""
        self.log_path = state_dir / "agent.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "serverlessos_agent.cli.main",
            "serve",
            "--node-name",
            "test-node",
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
            *([] if "--tls-dir" in self.extra else ["--insecure"]),
            *self.extra,
        ]
        return [*self.wrap, *cmd]

    def start(self, timeout: float = 20.0) -> AgentProcess:
        ready = self.state_dir / "agent.json"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent not ready in {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        self.endpoint, self.metrics = info["grpc"], info.get("metrics", "")
        self.channel = self.connect()
        self.stub = pb_grpc.AgentStub(self.channel)
        return self

    def connect(self, tls: Path | None = None, node: str = "test-node") -> grpc.Channel:
        """A channel to the agent: plaintext, or mutual TLS as the identity in `tls`
        (default: the fixture's own) expecting the agent of `node`."""
        tls = tls or self.client_tls
        if tls is None:
            return grpc.insecure_channel(self.endpoint)
        credentials = grpc.ssl_channel_credentials(
            (tls / "ca.pem").read_bytes(),
            (tls / "key.pem").read_bytes(),
            (tls / "cert.pem").read_bytes(),
        )
        name = f"{node}.node.serverlessos.internal"
        return grpc.secure_channel(
            self.endpoint, credentials, [("grpc.ssl_target_name_override", name)]
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_channel()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self._close_channel()
        return code

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # --- conveniences for tests ---------------------------------------

    def run(
        self,
        name: str,
        argv: list[str],
        *,
        cpu: int = 0,
        memory: int = 0,
        restart: int = pb.RESTART_POLICY_NEVER,
        env: dict[str, str] | None = None,
        namespace: str = "default",
        workdir: str = "",
    ) -> pb.Process:
        spec = pb.ProcessSpec(
            name=name,
            owner=pb.Owner(namespace=namespace, uid="uid-" + name),
            argv=argv,
            env=env or {},
            working_dir=workdir,
            resources=pb.Resources(cpu_millis=cpu, memory_bytes=memory),
            restart_policy=restart,
        )
        return self.stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=30)

    def get(self, name: str, namespace: str = "default") -> pb.Process:
        ref = pb.ProcessRef(namespace=namespace, name=name)
        return self.stub.GetProcess(pb.GetProcessRequest(ref=ref), timeout=10)

    def stop(self, name: str, grace: float | None = 0.0, namespace: str = "default") -> pb.Process:
        req = pb.StopProcessRequest(ref=pb.ProcessRef(namespace=namespace, name=name))
        if grace is not None:
            req.grace_period_seconds = grace
        return self.stub.StopProcess(req, timeout=60)

    def wait_for(
        self,
        name: str,
        pred: Callable[[pb.Process], bool],
        timeout: float = 20.0,
        namespace: str = "default",
    ) -> pb.Process:
        deadline = time.monotonic() + timeout
        while True:
            p = self.get(name, namespace)
            if pred(p):
                return p
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last state:\n{p}")
            time.sleep(0.05)

    def logs(self, name: str, tail: int = 0) -> bytes:
        req = pb.ReadLogsRequest(ref=pb.ProcessRef(namespace="default", name=name), tail_lines=tail)
        return b"".join(c.data for c in self.stub.ReadLogs(req, timeout=10))

    def events(self, since: int) -> list[pb.ProcessEvent]:
        """The events after `since`, up to the agent's current revision."""
        revision = self.stub.ListProcesses(pb.ListProcessesRequest(), timeout=10).revision
        out: list[pb.ProcessEvent] = []
        if revision <= since:
            return out
        stream = self.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=since), timeout=10)
        for event in stream:
            out.append(event)
            if event.seq >= revision:
                stream.cancel()
                break
        return out

    def cgroup_dir(self, controller: str, name: str, namespace: str = "default") -> Path:
        v1, _ = cgroup_mounts()
        return v1[controller] / self.cgroup_root / namespace / name


def cleanup_cgroups(root: str) -> None:
    """Kill whatever a test left in its cgroup subtree, then remove the subtree."""
    v1, v2 = cgroup_mounts()
    hierarchies = {p for p in v1.values()} | ({v2} if v2 else set())
    for hierarchy in hierarchies:
        base = hierarchy / root
        if not base.exists():
            continue
        for _ in range(100):
            pids = []
            for procs in base.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids += [int(x) for x in procs.read_text().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        for directory in sorted(
            (p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []
    roots: set[str] = set()

    def make(
        extra: list[str] | None = None,
        wrap: list[str] | None = None,
        state_dir: Path | None = None,
        cgroup_root: str | None = None,
        client_tls: Path | None = None,
    ) -> AgentProcess:
        root = cgroup_root or f"sos-test-{uuid.uuid4().hex[:8]}"
        roots.add(root)
        state = state_dir or tmp_path / f"state-{len(made)}"
        state.mkdir(parents=True, exist_ok=True)
        agent = AgentProcess(state, root, extra or [], wrap or [], client_tls)
        made.append(agent)
        return agent.start()

    yield make
    for agent in made:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill9()
        agent._close_channel()
    for root in roots:
        cleanup_cgroups(root)  # shims live in <root>/_shims, so this ends them too


def _installed(script: str) -> str:
    """Run one of the project's install scripts (cached, fast when warm); its path."""
    out = subprocess.run([str(ROOT / "hack" / script)], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian trixie, installed the way `make test` does."""
    return _installed("install-promtool.sh")


@pytest.fixture(scope="session")
def criu() -> str:
    """CRIU 4.2 from Debian forky in a private prefix (hack/install-criu.sh)."""
    return _installed("install-criu.sh")


@pytest.fixture(scope="session")
def redis_server() -> str:
    """Redis 7.0 from Debian bookworm in a private prefix (hack/install-redis.sh);
    redis-cli is next to it."""
    return _installed("install-redis.sh")


@pytest.fixture
def agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    if not IS_ROOT:
        pytest.skip("needs root: real cgroups and PID namespaces")
    return agent_factory()
