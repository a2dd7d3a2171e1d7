"""Cluster benchmark: apply -> Running for ServerlessProcesses beside plain Pods.

    make bench-cluster   (or: NODES=20 hack/up.sh && .venv/bin/python hack/bench/cluster.py)

Against the local cluster (`make up`, 20 kwok nodes for the standard figures):
creates N ServerlessProcesses and N plain Pods, interleaved, in the same run,
and reports apply -> Running latency p50/p99 of each (the Pods' Pending ->
Running is kube-scheduler + kwok), sustained creations per second, and the
operator's RSS and CPU during the run. Everything it creates is deleted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import CLK_TCK, cpu_ticks, machine, pct  # hack/bench/, beside this script
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[2]
LOCAL = Path(os.environ.get("SERVERLESSOS_LOCAL", REPO / ".local"))
GROUP, VERSION, PLURAL = "serverlessos.io", "v1alpha1", "serverlessprocesses"
TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def proc_sample(pid: int) -> tuple[int, int]:
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return cpu_ticks(pid), rss


class Watcher(threading.Thread):
    """Records the first time each object is seen Running."""

    def __init__(self, lister: Any, args: tuple[Any, ...], running: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.lister, self.args, self.running = lister, args, running
        self.stop = False

    def run(self) -> None:
        w = watch.Watch()
        for event in w.stream(self.lister, *self.args, timeout_seconds=600):
            obj = event["object"]
            if isinstance(obj, dict):
                name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
            else:
                name, phase = obj.metadata.name, obj.status.phase if obj.status else None
            if phase == "Running" and name not in self.running:
                self.running[name] = time.monotonic()
            if self.stop:
                w.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent creating clients")
    args = parser.parse_args()
    api_client = config.new_client_from_config(config_file=str(LOCAL / "kubeconfig"))
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    nodes = custom.list_cluster_custom_object(GROUP, VERSION, "serverlessnodes")["items"]
    operator_pid = int((LOCAL / "operator.pid").read_text())
    print(machine())
    print(
        f"cluster: {len(nodes)} kwok nodes with real agents; {args.count} of each kind, "
        f"{args.parallel} creating clients"
    )

    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    sp_running: dict[str, float] = {}
    pod_running: dict[str, float] = {}
    watchers = [
        Watcher(custom.list_namespaced_custom_object, (GROUP, VERSION, ns, PLURAL), sp_running),
        Watcher(core.list_namespaced_pod, (ns,), pod_running),
    ]
    for w in watchers:
        w.start()
    time.sleep(1.0)
    created: dict[str, float] = {}

    def make(i: int) -> None:
        sp = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServerlessProcess",
            "metadata": {"name": f"sp-{i}"},
            "spec": {
                "command": ["sleep", "3600"],
                "tolerations": [TOLERATION],
                "resources": {"cpu": "10m", "memory": "16Mi"},
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 1000},
            },
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"pod-{i}"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m"}},
                    }
                ],
                "tolerations": [TOLERATION],
            },
        }
        created[f"sp-{i}"] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, sp)
        created[f"pod-{i}"] = time.monotonic()
        core.create_namespaced_pod(ns, pod)

    cpu0, _ = proc_sample(operator_pid)
    rss_max = 0
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(make, i) for i in range(args.count)]
        while not all(f.done() for f in futures):
            rss_max = max(rss_max, proc_sample(operator_pid)[1])
            time.sleep(0.2)
        for f in futures:
            f.result()
    t_created = time.monotonic()
    deadline = time.monotonic() + 300
    while (
        len(sp_running) < args.count or len(pod_running) < args.count
    ) and time.monotonic() < deadline:
        rss_max = max(rss_max, proc_sample(operator_pid)[1])
        time.sleep(0.2)
    t_done = max(sp_running.values(), default=t0)
    cpu1, rss = proc_sample(operator_pid)
    rss_max = max(rss_max, rss)
    for w in watchers:
        w.stop = True

    sp_lat = [(sp_running[k] - created[k]) * 1000 for k in sp_running]
    pod_lat = [(pod_running[k] - created[k]) * 1000 for k in pod_running]
    if len(sp_lat) < args.count:
        print(f"WARNING: only {len(sp_lat)}/{args.count} ServerlessProcesses reached Running")
    print("\napply -> Running:")
    print(
        f"  ServerlessProcess  p50 {pct(sp_lat, 50):7.0f} ms   p99 {pct(sp_lat, 99):7.0f} ms"
        f"   (target p99 <= 2000 ms)"
    )
    print(f"  plain Pod (kwok)   p50 {pct(pod_lat, 50):7.0f} ms   p99 {pct(pod_lat, 99):7.0f} ms")
    print(
        f"  ratio p50 {pct(sp_lat, 50) / pct(pod_lat, 50):.2f}x, "
        f"p99 {pct(sp_lat, 99) / pct(pod_lat, 99):.2f}x (ServerlessProcess / Pod)"
    )
    print(f"  mean {statistics.mean(sp_lat):.0f} ms vs {statistics.mean(pod_lat):.0f} ms")
    rate = len(sp_lat) / max(1e-9, t_done - t0)
    print(
        f"\nsustained: {rate:.1f} ServerlessProcesses/s from first create to last Running "
        f"(creating took {t_created - t0:.1f} s, target >= 20/s)"
    )
    busy = (cpu1 - cpu0) / CLK_TCK
    print(
        f"operator: peak RSS {rss_max / 2**20:.0f} MiB (target <= 300 MB), "
        f"CPU {busy:.1f} s over {t_done - t0:.1f} s ({busy / max(1e-9, t_done - t0) * 100:.0f}% "
        "of one core)"
    )

    print("\ncleaning up ...", file=sys.stderr)
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    deadline = time.monotonic() + 180
    while (
        custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    core.delete_namespace(ns)


if __name__ == "__main__":
    main()
