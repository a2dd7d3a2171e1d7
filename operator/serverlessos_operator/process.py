"""ServerlessProcess <-> agent: what to ask the agent for, and what status its answers mean."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.quantity import parse_bytes, parse_cpu_millis

from .placement import Request, Toleration

POLICIES = {
    "Always": pb.RESTART_POLICY_ALWAYS,
    "OnFailure": pb.RESTART_POLICY_ON_FAILURE,
    "Never": pb.RESTART_POLICY_NEVER,
}
# The agent's states as ServerlessProcess phases. A process waiting to be
# restarted is still Running, as a crash-looping pod is.
PHASES = {
    pb.PROCESS_STATE_PENDING: "Scheduled",
    pb.PROCESS_STATE_RUNNING: "Running",
    pb.PROCESS_STATE_BACKOFF: "Running",
    pb.PROCESS_STATE_SUCCEEDED: "Succeeded",
    pb.PROCESS_STATE_FAILED: "Failed",
    pb.PROCESS_STATE_STOPPING: "Running",
}
TERMINAL = ("Succeeded", "Failed")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_millis(value: int | str) -> int:
    return int(value) * 1000 if isinstance(value, int) else parse_cpu_millis(value)


def memory_bytes(value: int | str) -> int:
    return int(value) if isinstance(value, int) else parse_bytes(value)


def request_of(spec: Mapping[str, Any]) -> Request:
    resources = spec.get("resources") or {}
    return Request(
        cpu_millis=cpu_millis(resources.get("cpu", "100m")),
        memory_bytes=memory_bytes(resources.get("memory", "128Mi")),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(
            Toleration(
                key=t.get("key", ""),
                operator=t.get("operator", "Equal"),
                value=t.get("value", ""),
                effect=t.get("effect", ""),
            )
            for t in spec.get("tolerations") or []
        ),
    )


def start_request(
    namespace: str, name: str, uid: str, spec: Mapping[str, Any], cpu_millis: int | None = None
) -> pb.StartProcessRequest:
    """`cpu_millis`: a limit other than the spec's (a ClusterCgroup member's share)."""
    request = request_of(spec)
    return pb.StartProcessRequest(
        spec=pb.ProcessSpec(
            name=name,
            owner=pb.Owner(namespace=namespace, uid=uid),
            argv=[*spec["command"], *(spec.get("args") or [])],
            env={e["name"]: e.get("value", "") for e in spec.get("env") or []},
            working_dir=spec.get("workingDir") or "",
            resources=pb.Resources(
                cpu_millis=request.cpu_millis if cpu_millis is None else cpu_millis,
                memory_bytes=request.memory_bytes,
            ),
            restart_policy=POLICIES[spec.get("restartPolicy", "Always")],
        )
    )


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """metav1.Condition semantics: lastTransitionTime changes only when status does."""
    value = "True" if status else "False"
    out, found = [], False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        out.append(
            {
                **cond,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now() if changed else cond.get("lastTransitionTime", now()),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now(),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    return out


def status_from_agent(
    process: pb.Process, node: str, conditions: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The status a ServerlessProcess gets from its agent's record."""
    phase = PHASES.get(process.state, "Running")
    term = process.last_termination if process.HasField("last_termination") else None
    running = process.state == pb.PROCESS_STATE_RUNNING
    if running:
        reason, message = "Running", ""
    elif process.state == pb.PROCESS_STATE_BACKOFF:
        reason, message = "BackOff", process.message
    elif term is not None:
        reason, message = term.reason, term.message
    else:
        reason, message = pb.ProcessState.Name(process.state), process.message
    conds = set_condition(conditions, "Scheduled", True, "Placed", f"on node {node}")
    conds = set_condition(conds, "Ready", running, reason, message)
    return {
        "phase": phase,
        "node": node,
        "pid": process.pid or None,
        "processUid": process.uid,
        "startedAt": rfc3339(process.started_at),
        "finishedAt": rfc3339(term.finished_at) if term and phase in TERMINAL else None,
        "exitCode": term.exit_code if term and not running else None,
        "reason": reason,
        "message": message,
        "restarts": process.restarts,
        "conditions": conds,
    }
