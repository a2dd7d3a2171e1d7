"""`serverlessos-agent ctl`: a client for one agent, like crictl for the CRI."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth import identity
from serverlessos.quantity import (
    QuantityError,
    format_bytes,
    format_bytes_approx,
    format_cpu,
    parse_bytes,
    parse_cpu_millis,
)
from serverlessos.table import table

POLICIES = {
    "Always": pb.RESTART_POLICY_ALWAYS,
    "OnFailure": pb.RESTART_POLICY_ON_FAILURE,
    "Never": pb.RESTART_POLICY_NEVER,
}


class UsageError(Exception):
    pass


def _common_flags(default_agent: str, *, with_defaults: bool) -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name, as kubectl and crictl
    users type them (`ctl -n x ps`, `ctl ps -n x`). Only `ctl`'s own copy has the
    defaults: the commands' copies set nothing unless given, so a flag before the
    command is kept, and one after it overrides one before (the later one wins)."""

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--agent", default=default(default_agent), help="HOST:PORT (env SERVERLESSOS_AGENT)"
    )
    flags.add_argument("-n", "--namespace", default=default("default"))
    flags.add_argument("-o", "--output", choices=["table", "json"], default=default("table"))
    flags.add_argument("--timeout", type=float, default=default(30.0), help="seconds per call")
    flags.add_argument(
        "--tls-dir",
        default=default(None),
        help="mutual TLS as the identity in DIR (ca.pem, cert.pem, key.pem; the API takes "
        "only the operator's); default: plaintext, for an agent run with --insecure",
    )
    flags.add_argument(
        "--node", default=default(""), help="with --tls-dir: the node whose agent it must be"
    )
    return flags


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], default_agent: str
) -> None:
    p = sub.add_parser(
        "ctl",
        help="talk to an agent (run, ps, inspect, stop, logs, stats, update)",
        parents=[_common_flags(default_agent, with_defaults=True)],
    )
    common = [_common_flags(default_agent, with_defaults=False)]
    cmds = p.add_subparsers(dest="ctl_command", required=True)

    run = cmds.add_parser(
        "run", help="start a process: run NAME [flags] -- CMD ARGS...", parents=common
    )
    run.add_argument("name")
    run.add_argument("--cpu", help="CPU limit, e.g. 500m or 2")
    run.add_argument("--memory", help="memory limit, e.g. 256Mi or 1Gi")
    run.add_argument("--restart", choices=list(POLICIES), default="Always")
    run.add_argument("--env", action="append", default=[], metavar="K=V")
    run.add_argument("--workdir", default="", help="absolute working directory")
    run.add_argument("--owner-uid", default="", help="opaque owner id (the operator sets it)")
    run.set_defaults(command=[])  # main() puts everything after "--" here

    ps = cmds.add_parser("ps", help="list processes", parents=common)
    ps.add_argument("-A", "--all-namespaces", action="store_true")

    inspect = cmds.add_parser("inspect", help="show one process in full", parents=common)
    inspect.add_argument("name")

    stop = cmds.add_parser("stop", help="stop and remove a process", parents=common)
    stop.add_argument("name")
    stop.add_argument("--grace", type=float, help="seconds between SIGTERM and SIGKILL")

    logs = cmds.add_parser("logs", help="print a process's output", parents=common)
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=0, help="last N lines (0 = all)")

    cmds.add_parser("stats", help="node and per-process usage", parents=common)

    update = cmds.add_parser("update", help="change limits of a running process", parents=common)
    update.add_argument("name")
    update.add_argument("--cpu")
    update.add_argument("--memory")
    update.add_argument(
        "--lease", type=float, help="hold the limits this many seconds unless renewed"
    )
    update.add_argument("--fallback-cpu", help="CPU when the lease runs out (default: keep)")
    update.add_argument("--fallback-memory", help="memory when the lease runs out (default: keep)")

    events = cmds.add_parser("events", help="watch lifecycle events", parents=common)
    events.add_argument("--since", type=int, default=0, help="resume after this seq")
    events.add_argument("--no-follow", action="store_true", help="print retained events and exit")


def _ref(args: argparse.Namespace) -> pb.ProcessRef:
    return pb.ProcessRef(namespace=args.namespace, name=args.name)


def _cpu(text: str | None) -> int:
    return parse_cpu_millis(text) if text else 0


def _mem(text: str | None) -> int:
    return parse_bytes(text) if text else 0


def _json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _age(ts: Any) -> str:
    if not ts.seconds:
        return "-"
    seconds = max(0, int(time.time() - ts.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _state(p: pb.Process) -> str:
    return pb.ProcessState.Name(p.state).removeprefix("PROCESS_STATE_").title().replace("_", "")


def _process_rows(processes: Iterable[pb.Process]) -> list[list[str]]:
    rows = []
    for p in processes:
        res = p.spec.resources
        rows.append(
            [
                p.spec.owner.namespace,
                p.spec.name,
                _state(p),
                str(p.pid or "-"),
                str(p.restarts),
                format_cpu(res.cpu_millis) if res.cpu_millis else "-",
                format_bytes(res.memory_bytes) if res.memory_bytes else "-",
                _age(p.created_at),
                " ".join(p.spec.argv)[:40],
            ]
        )
    return rows


PROCESS_HEADERS = [
    "NAMESPACE",
    "NAME",
    "STATE",
    "PID",
    "RESTARTS",
    "CPU",
    "MEMORY",
    "AGE",
    "COMMAND",
]


def _describe(p: pb.Process) -> str:
    res = p.spec.resources
    policy = pb.RestartPolicy.Name(p.spec.restart_policy).removeprefix("RESTART_POLICY_")
    lines = [
        f"Name:          {p.spec.name}",
        f"Namespace:     {p.spec.owner.namespace}",
        f"UID:           {p.uid}",
        f"State:         {_state(p)}",
        f"PID:           {p.pid or '-'}",
        f"Command:       {' '.join(p.spec.argv)}",
        f"Working dir:   {p.spec.working_dir or '(private scratch directory)'}",
        f"CPU limit:     {format_cpu(res.cpu_millis) if res.cpu_millis else 'none'}",
        f"Memory limit:  {format_bytes(res.memory_bytes) if res.memory_bytes else 'none'}",
        f"Restart:       {policy.title().replace('_', '')} (restarts: {p.restarts})",
        f"Cgroup:        {p.cgroup}",
        f"Log:           {p.log_path}",
    ]
    if p.message:
        lines.append(f"Message:       {p.message}")
    if p.HasField("last_termination"):
        t = p.last_termination
        lines.append(f"Last exit:     {t.reason}: {t.message}")
    return "\n".join(lines)


def _print(args: argparse.Namespace, message: Message, text: str) -> None:
    print(json.dumps(_json(message), indent=2) if args.output == "json" else text)


def _dispatch(args: argparse.Namespace, stub: pb_grpc.AgentStub) -> int:
    t = args.timeout
    cmd = args.ctl_command
    if cmd == "run":
        command = list(args.command)
        if not command:
            raise UsageError("give the command after --, e.g. run NAME -- sleep 60")
        env = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--env {item!r} is not K=V")
            env[key] = value
        spec = pb.ProcessSpec(
            name=args.name,
            owner=pb.Owner(namespace=args.namespace, uid=args.owner_uid),
            argv=command,
            env=env,
            working_dir=args.workdir,
            resources=pb.Resources(cpu_millis=_cpu(args.cpu), memory_bytes=_mem(args.memory)),
            restart_policy=POLICIES[args.restart],
        )
        p = stub.StartProcess(pb.StartProcessRequest(spec=spec), timeout=t)
        _print(args, p, table(PROCESS_HEADERS, _process_rows([p])))
        if p.state == pb.PROCESS_STATE_FAILED:
            print(f"error: {p.message}", file=sys.stderr)
            return 1
        return 0
    if cmd == "ps":
        ns = "" if args.all_namespaces else args.namespace
        resp = stub.ListProcesses(pb.ListProcessesRequest(namespace=ns), timeout=t)
        _print(args, resp, table(PROCESS_HEADERS, _process_rows(resp.processes)))
        return 0
    if cmd == "inspect":
        p = stub.GetProcess(pb.GetProcessRequest(ref=_ref(args)), timeout=t)
        _print(args, p, _describe(p))
        return 0
    if cmd == "stop":
        req = pb.StopProcessRequest(ref=_ref(args))
        if args.grace is not None:
            req.grace_period_seconds = args.grace
        timeout = t + (args.grace if args.grace is not None else 10.0)
        p = stub.StopProcess(req, timeout=timeout)
        _print(args, p, f"stopped {p.spec.owner.namespace}/{p.spec.name}")
        return 0
    if cmd == "logs":
        if args.tail < 0:
            raise UsageError("--tail must be >= 0")
        logs_req = pb.ReadLogsRequest(ref=_ref(args), tail_lines=args.tail, follow=args.follow)
        out = sys.stdout.buffer
        for chunk in stub.ReadLogs(logs_req, timeout=None if args.follow else t):
            out.write(chunk.data)
            out.flush()
        return 0
    if cmd == "stats":
        s = stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=t)
        node = table(
            [
                "NODE",
                "CPU",
                "CPU USED",
                "MEMORY",
                "AVAILABLE",
                "NET/S",
                "PSI CPU",
                "PSI MEM",
                "PSI IO",
            ],
            [
                [
                    s.node_name,
                    format_cpu(s.cpu_capacity_millis),
                    f"{s.cpu_usage_cores:.2f}",
                    format_bytes_approx(s.memory_total_bytes),
                    format_bytes_approx(s.memory_available_bytes),
                    format_bytes_approx(s.network_bytes_per_second),
                    f"{s.cpu_pressure.some_avg10:.2f}%",
                    f"{s.memory_pressure.some_avg10:.2f}%",
                    f"{s.io_pressure.some_avg10:.2f}%",
                ]
            ],
        )
        procs = table(
            ["NAMESPACE", "NAME", "CPU", "CPU SECONDS", "THROTTLED", "MEMORY", "PEAK"],
            [
                [
                    p.ref.namespace,
                    p.ref.name,
                    f"{p.cpu_usage_cores:.3f}",
                    f"{p.cpu_seconds:.2f}",
                    f"{p.cpu_throttled_seconds:.2f}s",
                    format_bytes_approx(p.memory_current_bytes),
                    format_bytes_approx(p.memory_peak_bytes),
                ]
                for p in s.processes
            ],
        )
        _print(args, s, f"{node}\n\n{procs}")
        return 0
    if cmd == "update":
        if args.cpu is None and args.memory is None:
            raise UsageError("give --cpu and/or --memory")
        current = stub.GetProcess(pb.GetProcessRequest(ref=_ref(args)), timeout=t)
        res = pb.Resources()
        res.CopyFrom(current.spec.resources)
        if args.cpu is not None:
            res.cpu_millis = _cpu(args.cpu)
        if args.memory is not None:
            res.memory_bytes = _mem(args.memory)
        update_req = pb.UpdateResourcesRequest(ref=_ref(args), resources=res)
        if args.lease is not None:
            update_req.lease.CopyFrom(
                pb.Lease(
                    seconds=args.lease,
                    fallback=pb.Resources(
                        cpu_millis=_cpu(args.fallback_cpu),
                        memory_bytes=_mem(args.fallback_memory),
                    ),
                )
            )
        elif args.fallback_cpu or args.fallback_memory:
            raise UsageError("--fallback-cpu and --fallback-memory need --lease")
        p = stub.UpdateResources(update_req, timeout=t)
        _print(args, p, table(PROCESS_HEADERS, _process_rows([p])))
        return 0
    if cmd == "events":
        watch_req = pb.WatchProcessesRequest(since_seq=args.since)
        stream = stub.WatchProcesses(watch_req)
        last = stub.ListProcesses(pb.ListProcessesRequest(), timeout=t).revision
        for event in stream:
            if args.output == "json":
                print(json.dumps(_json(event)), flush=True)
            else:
                kind = pb.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
                spec = event.process.spec
                who = f"{spec.owner.namespace}/{spec.name}"
                print(f"{event.seq:>6}  {kind:<18} {who}  {event.message}", flush=True)
            if args.no_follow and event.seq >= last:
                stream.cancel()
                break
        return 0
    raise UsageError(f"unknown command {cmd}")


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.tls_dir:
        return grpc.insecure_channel(args.agent)
    if not args.node:
        raise UsageError(
            "--tls-dir needs --node NAME: the node whose agent's certificate to accept"
        )
    directory = Path(args.tls_dir)
    credentials = grpc.ssl_channel_credentials(
        (directory / "ca.pem").read_bytes(),
        (directory / "key.pem").read_bytes(),
        (directory / "cert.pem").read_bytes(),
    )
    name = identity.node(args.node).tls_name  # the server must prove it is that node
    return grpc.secure_channel(args.agent, credentials, [("grpc.ssl_target_name_override", name)])


def run(args: argparse.Namespace) -> int:
    try:
        channel = _channel(args)
    except (UsageError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args, pb_grpc.AgentStub(channel))
    except (UsageError, QuantityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            print(
                f"error: cannot reach the agent at {args.agent}: {exc.details()}", file=sys.stderr
            )
        elif code == grpc.StatusCode.CANCELLED:
            return 0
        else:
            print(f"error: {exc.details()} ({code.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        channel.close()
