"""`kubectl sos` (installed as kubectl-sos): processes as users think of them.

kubectl sos get [-n NS | -A]        processes with node, usage and their node's pressure
kubectl sos logs [-f] [--tail N] NAME   a process's output, through the API server (RBAC:
                                    get serverlessprocesses/log, as kubectl logs)
kubectl sos migrate NAME [--to NODE] [--mode MODE] [--wait]
                                    move a running process to another node (a ProcessMigration)

-n/--namespace and --context go before or after the subcommand, as with kubectl.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from serverlessos.table import table

from ..api.meta import GROUP, VERSION
from ..api.v1alpha1 import MigrationMode, MigrationPhase, ProcessPhase
from ..infra.kube import MIGRATIONS, NODES, PROCESSES
from ..logs.discovery import GROUP as LOG_GROUP
from ..logs.discovery import VERSION as LOG_VERSION


class PluginError(Exception):
    pass


def _api(context: str | None) -> client.CustomObjectsApi:
    api_client = config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(api_client)


def _dict(value: object) -> dict[str, Any]:
    return cast(dict[str, Any], value)  # the client returns parsed JSON, typed as object


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    return str(active.get("context", {}).get("namespace", "default"))


def get(api: client.CustomObjectsApi, args: argparse.Namespace) -> int:
    if args.all_namespaces:
        items = _dict(api.list_cluster_custom_object(GROUP, VERSION, PROCESSES))["items"]
    else:
        found = api.list_namespaced_custom_object(GROUP, VERSION, _namespace(args), PROCESSES)
        items = _dict(found)["items"]
    nodes = {
        n["metadata"]["name"]: n.get("status") or {}
        for n in _dict(api.list_cluster_custom_object(GROUP, VERSION, NODES))["items"]
    }
    rows = []
    for item in items:
        status: dict[str, Any] = item.get("status") or {}
        usage = status.get("usage") or {}
        pressure = (nodes.get(status.get("node") or "", {}).get("pressure")) or {}
        rows.append(
            [
                item["metadata"]["namespace"],
                item["metadata"]["name"],
                status.get("phase", ProcessPhase.PENDING),
                status.get("node") or "-",
                str(status.get("pid") or "-"),
                usage.get("cpu", "-"),
                usage.get("memory", "-"),
                str(status.get("restarts", 0)),
                f"{pressure.get('cpuSomeAvg10', 0):.1f}%/{pressure.get('memorySomeAvg10', 0):.1f}%"
                if pressure
                else "-",
            ]
        )
    print(
        table(
            [
                "NAMESPACE",
                "NAME",
                "PHASE",
                "NODE",
                "PID",
                "CPU",
                "MEMORY",
                "RESTARTS",
                "NODE PSI CPU/MEM",
            ],
            rows,
        )
    )
    return 0


def logs(api: client.CustomObjectsApi, args: argparse.Namespace) -> int:
    """The process's output through the API server (the operator's log API, see
    logs/ in the operator), authorized by RBAC on serverlessprocesses/log like
    `kubectl logs`: no route to the agents is needed."""
    namespace = _namespace(args)
    path = f"/apis/{LOG_GROUP}/{LOG_VERSION}/namespaces/{namespace}/{PROCESSES}/{args.name}/log"
    query = [("follow", "true" if args.follow else "false"), ("tailLines", str(args.tail))]
    api_client = api.api_client
    method, url, headers, _, _ = api_client.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": "text/plain, application/json"},
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(
        method, url, header_params=headers, _request_timeout=None if args.follow else 60
    )
    raw = response.response  # unread: the body streams
    try:
        if response.status >= 400:
            raise PluginError(_status_message(response.status, response.reason, raw.read()))
        for chunk in raw.stream(1 << 16, decode_content=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        raw.release_conn()
    return 0


def _status_message(code: int, reason: str | None, body: bytes) -> str:
    """The Status message the API server (or the log API) gave, as kubectl prints it."""
    try:
        status = json.loads(body or b"{}")
    except ValueError:
        status = {}
    message = status.get("message") if isinstance(status, dict) else None
    if code == 503 and not message:
        message = "the log API is not available (is the operator running?)"
    return f"{message or reason or 'error'} ({code})"


def migrate(api: client.CustomObjectsApi, args: argparse.Namespace) -> int:
    """Create a ProcessMigration; with --wait, follow it to its end (exit 1 unless it
    succeeded)."""
    namespace = _namespace(args)
    name = f"{args.name}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"[:253]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProcessMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"process": args.name, "mode": args.mode, "targetNode": args.to or ""},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, MIGRATIONS, body)
    print(f"processmigration/{name} created")
    if not args.wait:
        return 0
    shown = ""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        item = _dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, MIGRATIONS, name))
        status: dict[str, Any] = item.get("status") or {}
        phase = status.get("phase") or MigrationPhase.PENDING
        line = f"{phase}"
        if status.get("targetNode"):
            line += f" {status.get('sourceNode')} -> {status.get('targetNode')}"
        if status.get("mode"):
            line += f" ({status['mode']})"
        if line != shown:
            print(line, flush=True)
            shown = line
        if MigrationPhase(phase).terminal:
            extra = f", downtime {status['downtime']}" if status.get("downtime") else ""
            print(f"{phase}{extra}: {status.get('message', '')}")
            return 0 if phase == MigrationPhase.SUCCEEDED else 1
        time.sleep(0.5)
    raise PluginError(f"{name} did not finish within {args.timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl sos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    parser.add_argument("--context", help="the kubeconfig context")
    # The same flags after the subcommand, as kubectl takes them: there they win.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    common.add_argument("--context", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("get", help="list processes", parents=[common])
    g.add_argument("-A", "--all-namespaces", action="store_true")
    lg = sub.add_parser("logs", help="print a process's output", parents=[common])
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, default=0)
    mg = sub.add_parser("migrate", help="move a running process to another node", parents=[common])
    mg.add_argument("name")
    mg.add_argument("--to", help="target node (default: placement picks one)")
    mg.add_argument(
        "--mode", default=MigrationMode.AUTO.value, choices=[m.value for m in MigrationMode]
    )
    mg.add_argument("--wait", action="store_true", help="follow it until it ends")
    mg.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
    args = parser.parse_args(argv)
    commands = {"get": get, "logs": logs, "migrate": migrate}
    try:
        api = _api(args.context)
        return commands[args.command](api, args)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: {exc.reason} ({exc.status})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
