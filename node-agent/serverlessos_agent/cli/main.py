"""`serverlessos-agent`: argument parsing for the daemon and its client."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from serverlessos.quantity import QuantityError, parse_bytes

from ..daemon import AgentConfig, run
from ..errors import FailedPrecondition
from ..runtime.restart_policy import Backoff
from . import ctl

DEFAULT_AGENT = "127.0.0.1:7420"


def _seconds(text: str) -> float:
    value = text.strip()
    factor = 1.0
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], mult
            break
    try:
        seconds = float(value) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 2s, 500ms)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return seconds


def _bytes(text: str) -> int:
    try:
        return parse_bytes(text)
    except QuantityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the node agent daemon")
    p.add_argument("--node-name", required=True, help="this node's name (as in Kubernetes)")
    p.add_argument("--listen", default="0.0.0.0:7420", help="gRPC HOST:PORT (default %(default)s)")
    p.add_argument("--state-dir", required=True, type=Path, help="where records and logs live")
    p.add_argument("--cgroup-driver", choices=["auto", "v1", "v2"], default="auto")
    p.add_argument(
        "--cgroup-root", default="serverlessos", help="cgroup path for managed processes"
    )
    p.add_argument(
        "--node-cgroup",
        default="",
        help="cgroup path (relative to the hierarchy root) holding this node's load, when "
        "several agents share one machine (e.g. serverlessos/kwok-node-0): node CPU, memory "
        "and capacity come from that subtree, and PSI from its pressure files on cgroup v2 "
        "(on v1 PSI stays machine-wide). It must exist (it does when it is --cgroup-root "
        "or above it). Default: the whole machine, right on a real node",
    )
    p.add_argument("--metrics-listen", default="", help="Prometheus HOST:PORT (default: off)")
    p.add_argument("--stats-interval", type=_seconds, default=2.0, help="sampling period")
    p.add_argument("--default-grace", type=_seconds, default=10.0, help="stop grace period")
    p.add_argument("--restart-backoff", type=_seconds, default=1.0, help="first restart delay")
    p.add_argument("--restart-backoff-max", type=_seconds, default=300.0)
    p.add_argument("--log-max-size", type=_bytes, default=10 * 2**20, help="rotate logs above")
    p.add_argument("--log-max-files", type=int, default=1, help="rotated log files kept")
    p.add_argument("--criu", default="criu", help="CRIU binary (detected and published)")
    p.add_argument(
        "--max-processes",
        type=int,
        default=1000,
        help="processes this node keeps at once; more are refused (RESOURCE_EXHAUSTED)",
    )
    p.add_argument(
        "--max-checkpoint-size",
        type=_bytes,
        default=64 << 30,
        help="the most a checkpoint received from another agent may hold (default 64Gi)",
    )
    p.add_argument(
        "--process-ro-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a node directory every process sees, read-only, at the same path (repeat; "
        "/usr and /etc always are): where the node keeps runtimes its processes run",
    )
    k8s = p.add_argument_group("Kubernetes registration (writes this node's ServerlessNode)")
    k8s.add_argument("--kubeconfig", help="register through this kubeconfig")
    k8s.add_argument("--in-cluster", action="store_true", help="register with the pod's account")
    k8s.add_argument(
        "--advertise-address", default="", help="HOST:PORT the operator dials (default: --listen)"
    )
    k8s.add_argument("--heartbeat-interval", type=_seconds, default=5.0)
    tls = p.add_argument_group("the gRPC port's security (one of the two)")
    tls.add_argument(
        "--tls-dir",
        type=Path,
        help="mutual TLS: ca.pem (the cluster CA), cert.pem and key.pem (this node's identity); "
        "only the operator may call the API, only agents may send checkpoints",
    )
    tls.add_argument(
        "--tls-bootstrap",
        action="store_true",
        help="with --tls-dir and registration: ask the cluster's operator for this node's "
        "certificate (a CertificateSigningRequest) when there is none, and renew it",
    )
    tls.add_argument(
        "--operator-namespace",
        default="serverlessos-system",
        help="where the operator publishes the cluster CA (ConfigMap serverlessos-ca)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext and unauthenticated: for tests and a workstation only",
    )
    p.add_argument("-v", "--verbose", action="store_true")


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.stats_interval <= 0:
        print("error: --stats-interval must be positive", file=sys.stderr)
        return 2
    config = AgentConfig(
        node_name=args.node_name,
        listen=args.listen,
        state_dir=args.state_dir.resolve(),
        cgroup_driver=args.cgroup_driver,
        cgroup_root=args.cgroup_root,
        node_cgroup=args.node_cgroup,
        metrics_listen=args.metrics_listen,
        stats_interval=args.stats_interval,
        default_grace=args.default_grace,
        max_processes=args.max_processes,
        backoff=Backoff(base=args.restart_backoff, cap=args.restart_backoff_max),
        log_max_bytes=args.log_max_size,
        log_keep=args.log_max_files,
        criu=args.criu,
        max_checkpoint_bytes=args.max_checkpoint_size,
        process_ro_paths=tuple(args.process_ro_path),
        kubeconfig=args.kubeconfig,
        tls_dir=args.tls_dir.resolve() if args.tls_dir else None,
        insecure=args.insecure,
        tls_bootstrap=args.tls_bootstrap,
        operator_namespace=args.operator_namespace,
        in_cluster=args.in_cluster,
        advertise_address=args.advertise_address,
        heartbeat_interval=args.heartbeat_interval,
    )
    try:
        asyncio.run(run(config))
    except (ValueError, FailedPrecondition) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serverlessos-agent",
        description="ServerlessOS node agent: runs, limits and observes processes on one node.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    ctl.add_parser(sub, default_agent=os.environ.get("SERVERLESSOS_AGENT", DEFAULT_AGENT))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command to run, flags included.
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if command:
        if getattr(args, "ctl_command", None) != "run":
            parser.error("only 'ctl run' takes a command after --")
        args.command = command
    if args.command == "serve":
        return serve(args)
    return ctl.run(args)


if __name__ == "__main__":
    sys.exit(main())
