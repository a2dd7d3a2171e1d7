"""Node agent benchmarks: start latency against bare Popen, and idle supervision cost.

    make bench    (or: .venv/bin/python hack/bench/agent.py [--starts 100] [--idle-seconds 30])

Runs a real agent (real cgroups, PID namespaces; needs root) and prints the
machine, then the figures. Everything compared is measured side by side in the
same run, interleaved, because these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from benchlib import (  # hack/bench/, beside this script
    CLK_TCK,
    cleanup_cgroups,
    cpu_ticks,
    machine,
    pct,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc

COMMAND = ["sleep", "3600"]


def rss_kib(pid: int, field: str = "Rss") -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def start_agent(state: Path, root: str) -> tuple[subprocess.Popen[bytes], str]:
    cmd = [
        sys.executable,
        "-m",
        "serverlessos_agent.cli.main",
        "serve",
        "--node-name",
        "bench",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(state),
        "--cgroup-root",
        root,
        "--insecure",  # the figures are the agent's own, without TLS
    ]
    log = open(state / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    ready = state / "agent.json"
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"agent did not start:\n{(state / 'agent.log').read_text()}")
        time.sleep(0.02)
    return proc, json.loads(ready.read_text())["grpc"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the agent benchmark needs root (cgroups, PID namespaces)")

    print(machine())
    state = Path(tempfile.mkdtemp(prefix="sos-bench-"))
    root = f"sos-bench-{uuid.uuid4().hex[:8]}"
    agent, endpoint = start_agent(state, root)
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.AgentStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    bare: list[subprocess.Popen[bytes]] = []
    try:
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)  # warm the channel
        agent_ms, popen_ms, rpc_ms = [], [], []
        for i in range(args.starts):
            t = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            rpc_ms.append((time.perf_counter() - t) * 1e3)

            spec = pb.ProcessSpec(
                name=f"idle-{i}",
                argv=COMMAND,
                resources=pb.Resources(cpu_millis=100, memory_bytes=32 * 2**20),
                restart_policy=pb.RESTART_POLICY_NEVER,
            )
            t = time.perf_counter()
            p = stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=30)
            agent_ms.append((time.perf_counter() - t) * 1e3)
            if p.state != pb.PROCESS_STATE_RUNNING:
                raise SystemExit(f"start {i} did not run: {p}")

            t = time.perf_counter()
            bare.append(subprocess.Popen(COMMAND))
            popen_ms.append((time.perf_counter() - t) * 1e3)
        for proc in bare:
            proc.kill()
            proc.wait()

        p50a, p99a = pct(agent_ms, 50), pct(agent_ms, 99)
        p50p, p99p = pct(popen_ms, 50), pct(popen_ms, 99)
        floor = pct(rpc_ms, 50)
        print(f"\nStartProcess -> running, {args.starts} starts (limits, own PID namespace):")
        print(
            f"  agent StartProcess     p50 {p50a:7.2f} ms   p99 {p99a:7.2f} ms   (target <= 20 ms)"
        )
        print(f"  bare subprocess.Popen  p50 {p50p:7.3f} ms   p99 {p99p:7.3f} ms")
        print(f"  gRPC health check      p50 {floor:7.3f} ms   (the RPC floor, same channel)")
        print(f"  ratio agent/Popen p50  {p50a / p50p:7.1f}x  (target <= 3x)")

        # ----- supervision cost with the processes idle ---------------------------
        helpers = children_of(agent.pid)  # the fork server
        time.sleep(2.0)
        before = cpu_ticks(agent.pid)
        helpers_before = sum(cpu_ticks(h) for h in helpers)
        t0 = time.monotonic()
        time.sleep(args.idle_seconds)
        elapsed = time.monotonic() - t0
        agent_pct = (cpu_ticks(agent.pid) - before) / CLK_TCK / elapsed * 100
        helper_pct = (sum(cpu_ticks(h) for h in helpers) - helpers_before) / CLK_TCK / elapsed * 100
        listed = stub.ListProcesses(pb.ListProcessesRequest(), timeout=10).processes
        shims = [p for p in listed if p.state == pb.PROCESS_STATE_RUNNING]
        # This agent's fork server and its shims (its children), not other agents' ones.
        ours = [*helpers, *(child for h in helpers for child in children_of(h))]
        shim_pss = sum(rss_kib(pid, "Pss") for pid in ours if Path(f"/proc/{pid}").exists())
        print(f"\nSupervising {len(shims)} idle processes for {elapsed:.0f} s, stats every 2 s:")
        print(f"  agent CPU              {agent_pct:6.2f} % of one core   (target < 2 %)")
        print(f"  fork server CPU        {helper_pct:6.2f} % of one core")
        print(f"  agent RSS              {rss_kib(agent.pid) / 1024:6.1f} MiB")
        print(
            f"  shims + fork server    {shim_pss / 1024:6.1f} MiB PSS in all "
            f"({shim_pss / max(1, len(shims)) / 1024:.2f} MiB per process)"
        )
    finally:
        channel.close()
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        for proc in bare:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        cleanup_cgroups(root)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
