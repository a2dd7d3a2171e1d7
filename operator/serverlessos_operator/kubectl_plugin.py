"""`kubectl sos` (installed as kubectl-sos): processes as users think of them.

kubectl sos get [-n NS | -A]        processes with node, usage and their node's pressure
kubectl sos logs [-f] [--tail N] NAME   a process's output, streamed from its node's agent
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

import grpc
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos_agent.cli.ctl import table

from .api.schema import GROUP, VERSION
from .kube import NODES, PROCESSES


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
                status.get("phase", "Pending"),
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
    namespace = _namespace(args)
    try:
        item = _dict(
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PROCESSES, args.name)
        )
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f"serverlessprocess {args.name!r} not found in {namespace}") from exc
        raise
    node = (item.get("status") or {}).get("node")
    if not node:
        raise PluginError(f"{args.name} is not placed on a node yet")
    node_obj = _dict(api.get_cluster_custom_object(GROUP, VERSION, NODES, node))
    endpoint = (node_obj.get("status") or {}).get("endpoint")
    if not endpoint:
        raise PluginError(f"node {node} has no agent endpoint")
    with grpc.insecure_channel(endpoint) as channel:
        stub = pb_grpc.AgentStub(channel)
        request = pb.ReadLogsRequest(
            ref=pb.ProcessRef(namespace=namespace, name=args.name),
            tail_lines=args.tail,
            follow=args.follow,
        )
        for chunk in stub.ReadLogs(request, timeout=None if args.follow else 30):
            sys.stdout.buffer.write(chunk.data)
            sys.stdout.buffer.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubectl sos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--context")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("get", help="list processes")
    g.add_argument("-A", "--all-namespaces", action="store_true")
    lg = sub.add_parser("logs", help="print a process's output")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        api = _api(args.context)
        return get(api, args) if args.command == "get" else logs(api, args)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"error: {exc.details()} ({exc.code().name})", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: {exc.reason} ({exc.status})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
