"""ServerlessProcess <-> agent: what to ask the agent for, and what status its answers mean."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.conditions import set_condition
from ..api.meta import Condition
from ..api.v1alpha1 import ProcessPhase, RestartPolicy, ServerlessProcessSpec

POLICIES = {
    RestartPolicy.ALWAYS: pb.RESTART_POLICY_ALWAYS,
    RestartPolicy.ON_FAILURE: pb.RESTART_POLICY_ON_FAILURE,
    RestartPolicy.NEVER: pb.RESTART_POLICY_NEVER,
}
# The agent's states as ServerlessProcess phases. A process waiting to be
# restarted is still Running, as a crash-looping pod is.
PHASES = {
    pb.PROCESS_STATE_PENDING: ProcessPhase.SCHEDULED,
    pb.PROCESS_STATE_RUNNING: ProcessPhase.RUNNING,
    pb.PROCESS_STATE_BACKOFF: ProcessPhase.RUNNING,
    pb.PROCESS_STATE_SUCCEEDED: ProcessPhase.SUCCEEDED,
    pb.PROCESS_STATE_FAILED: ProcessPhase.FAILED,
    pb.PROCESS_STATE_STOPPING: ProcessPhase.RUNNING,
}


def rfc3339(ts: Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_resources(spec: ServerlessProcessSpec, cpu_millis: int | None = None) -> pb.Resources:
    """The limits the agent sets; `cpu_millis`: a limit other than the spec's (a
    ClusterCgroup member's share)."""
    return pb.Resources(
        cpu_millis=spec.resources.cpu.milli_value() if cpu_millis is None else cpu_millis,
        memory_bytes=spec.resources.memory.value(),
    )


def start_request(
    namespace: str,
    name: str,
    uid: str,
    spec: ServerlessProcessSpec,
    *,
    env: dict[str, str],
    cpu_millis: int | None = None,
) -> pb.StartProcessRequest:
    """`env`: the spec's environment with its valueFrom variables read (env.py)."""
    return pb.StartProcessRequest(
        spec=pb.ProcessSpec(
            name=name,
            owner=pb.Owner(namespace=namespace, uid=uid),
            argv=[*spec.command, *spec.args],
            env=env,
            working_dir=spec.working_dir or "",
            resources=agent_resources(spec, cpu_millis),
            restart_policy=POLICIES[spec.restart_policy],
            security=agent_security(spec),
        )
    )


def agent_security(spec: ServerlessProcessSpec) -> pb.SecurityContext:
    context = spec.security_context
    security = pb.SecurityContext(
        run_as_user=context.run_as_user or 0,
        run_as_group=context.run_as_group or 0,
        supplemental_groups=context.supplemental_groups,
        capabilities_add=context.capabilities.add,
        allow_privilege_escalation=context.allow_privilege_escalation,
        seccomp_profile=context.seccomp_profile.type.value,
    )
    if context.fs_group is not None:
        security.fs_group = context.fs_group
    return security


def status_from_agent(
    process: pb.Process, node: str, conditions: Sequence[Condition]
) -> dict[str, Any]:
    """The status a ServerlessProcess gets from its agent's record."""
    phase = PHASES.get(process.state, ProcessPhase.RUNNING)
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
        "finishedAt": rfc3339(term.finished_at) if term and phase.terminal else None,
        "exitCode": term.exit_code if term and not running else None,
        "reason": reason,
        "message": message,
        "restarts": process.restarts,
        "conditions": conds,
    }
