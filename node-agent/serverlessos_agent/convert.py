"""Translation between the gRPC messages and the domain records. Nothing else.

Used by the gRPC edge (rpc/) and by migration/, which speaks the same API to the
other agent (a checkpoint's header carries the Process, progress is a message).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .errors import InvalidArgument
from .observe.stats import NodeSample, Pressure
from .records import (
    DEFAULT_NAMESPACE,
    Lease,
    ProcessRecord,
    ProcessSpec,
    Ref,
    Resources,
    RestartPolicy,
    Seccomp,
    Security,
    State,
    Termination,
)
from .storage.event_journal import Event, EventType

_POLICY_FROM_PB = {
    pb.RESTART_POLICY_UNSPECIFIED: RestartPolicy.ALWAYS,
    pb.RESTART_POLICY_ALWAYS: RestartPolicy.ALWAYS,
    pb.RESTART_POLICY_ON_FAILURE: RestartPolicy.ON_FAILURE,
    pb.RESTART_POLICY_NEVER: RestartPolicy.NEVER,
}
_POLICY_TO_PB = {
    RestartPolicy.ALWAYS: pb.RESTART_POLICY_ALWAYS,
    RestartPolicy.ON_FAILURE: pb.RESTART_POLICY_ON_FAILURE,
    RestartPolicy.NEVER: pb.RESTART_POLICY_NEVER,
}
_STATE_TO_PB = {
    State.PENDING: pb.PROCESS_STATE_PENDING,
    State.RUNNING: pb.PROCESS_STATE_RUNNING,
    State.BACKOFF: pb.PROCESS_STATE_BACKOFF,
    State.SUCCEEDED: pb.PROCESS_STATE_SUCCEEDED,
    State.FAILED: pb.PROCESS_STATE_FAILED,
    State.STOPPING: pb.PROCESS_STATE_STOPPING,
    State.STOPPED: pb.PROCESS_STATE_STOPPED,
    State.FROZEN: pb.PROCESS_STATE_FROZEN,
}
_EVENT_TO_PB = {
    EventType.STARTED: pb.EVENT_TYPE_STARTED,
    EventType.START_FAILED: pb.EVENT_TYPE_START_FAILED,
    EventType.EXITED: pb.EVENT_TYPE_EXITED,
    EventType.OOM_KILLED: pb.EVENT_TYPE_OOM_KILLED,
    EventType.RESTARTED: pb.EVENT_TYPE_RESTARTED,
    EventType.RESOURCES_UPDATED: pb.EVENT_TYPE_RESOURCES_UPDATED,
    EventType.STOPPED: pb.EVENT_TYPE_STOPPED,
    EventType.FROZEN: pb.EVENT_TYPE_FROZEN,
    EventType.RESUMED: pb.EVENT_TYPE_RESUMED,
    EventType.RESTORED: pb.EVENT_TYPE_RESTORED,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def ref_from_pb(ref: pb.ProcessRef) -> Ref:
    return Ref(ref.namespace or DEFAULT_NAMESPACE, ref.name)


def resources_from_pb(res: pb.Resources) -> Resources:
    return Resources(cpu_millis=res.cpu_millis, memory_bytes=res.memory_bytes)


def resources_to_pb(res: Resources) -> pb.Resources:
    return pb.Resources(cpu_millis=res.cpu_millis, memory_bytes=res.memory_bytes)


def lease_from_pb(lease: pb.Lease) -> Lease:
    return Lease(seconds=lease.seconds, fallback=resources_from_pb(lease.fallback))


def spec_from_pb(spec: pb.ProcessSpec) -> ProcessSpec:
    return ProcessSpec(
        name=spec.name,
        namespace=spec.owner.namespace or DEFAULT_NAMESPACE,
        owner_uid=spec.owner.uid,
        argv=tuple(spec.argv),
        env=dict(spec.env),
        working_dir=spec.working_dir,
        resources=resources_from_pb(spec.resources),
        restart_policy=_POLICY_FROM_PB.get(spec.restart_policy, RestartPolicy.ALWAYS),
        security=security_from_pb(spec.security),
    )


def security_from_pb(security: pb.SecurityContext) -> Security:
    """The ids and capability names are checked later (runtime/validation.py)."""
    profile = security.seccomp_profile or Seccomp.RUNTIME_DEFAULT.value
    if profile not in Seccomp._value2member_map_:
        raise InvalidArgument(
            f"seccomp profile {profile!r} is not one of {', '.join(m.value for m in Seccomp)}"
        )
    return Security(
        run_as_user=security.run_as_user,
        run_as_group=security.run_as_group,
        supplemental_groups=tuple(security.supplemental_groups),
        fs_group=security.fs_group if security.HasField("fs_group") else None,
        capabilities=tuple(security.capabilities_add),
        allow_privilege_escalation=security.allow_privilege_escalation,
        seccomp=Seccomp(profile),
    )


def security_to_pb(security: Security) -> pb.SecurityContext:
    out = pb.SecurityContext(
        run_as_user=security.run_as_user,
        run_as_group=security.run_as_group,
        supplemental_groups=list(security.supplemental_groups),
        capabilities_add=list(security.capabilities),
        allow_privilege_escalation=security.allow_privilege_escalation,
        seccomp_profile=str(security.seccomp),
    )
    if security.fs_group is not None:
        out.fs_group = security.fs_group
    return out


def spec_to_pb(spec: ProcessSpec) -> pb.ProcessSpec:
    return pb.ProcessSpec(
        name=spec.name,
        owner=pb.Owner(namespace=spec.namespace, uid=spec.owner_uid),
        argv=list(spec.argv),
        env=spec.env,
        working_dir=spec.working_dir,
        resources=resources_to_pb(spec.resources),
        restart_policy=_POLICY_TO_PB[spec.restart_policy],
        security=security_to_pb(spec.security),
    )


def termination_to_pb(t: Termination) -> pb.Termination:
    return pb.Termination(
        reason=t.reason.value,
        exit_code=t.exit_code,
        signal=t.signal,
        message=t.message,
        started_at=timestamp(t.started_at),
        finished_at=timestamp(t.finished_at),
        observed_after_agent_restart=t.observed_after_agent_restart,
    )


def process_to_pb(record: ProcessRecord, cgroup_display: str = "") -> pb.Process:
    msg = pb.Process(
        spec=spec_to_pb(record.spec),
        state=_STATE_TO_PB[record.state],
        pid=record.pid,
        restarts=record.restarts,
        created_at=timestamp(record.created_at),
        started_at=timestamp(record.last_started_at),
        message=record.message,
        cgroup=cgroup_display or record.cgroup,
        log_path=record.log_path,
        next_restart_at=timestamp(record.next_restart_at if record.state == State.BACKOFF else 0),
        uid=record.uid,
    )
    if record.last_termination is not None:
        msg.last_termination.CopyFrom(termination_to_pb(record.last_termination))
    if record.lease is not None:
        msg.lease.CopyFrom(
            pb.Lease(seconds=record.lease.seconds, fallback=resources_to_pb(record.lease.fallback))
        )
        msg.lease_expires_at.CopyFrom(timestamp(record.lease_expires_at))
    return msg


def event_to_pb(event: Event) -> pb.ProcessEvent:
    record: dict[str, Any] = event.record
    return pb.ProcessEvent(
        seq=event.seq,
        time=timestamp(event.time),
        type=_EVENT_TO_PB[event.type],
        process=process_to_pb(ProcessRecord.from_json(record)),
        message=event.message,
    )


def pressure_to_pb(p: Pressure) -> pb.Pressure:
    return pb.Pressure(
        some_avg10=p.some_avg10,
        some_avg60=p.some_avg60,
        full_avg10=p.full_avg10,
        full_avg60=p.full_avg60,
        some_total_us=p.some_total_us,
        full_total_us=p.full_total_us,
    )


def node_stats_to_pb(
    node_name: str, cgroup_version: str, sample: NodeSample, node_cgroup: str = ""
) -> pb.NodeStats:
    return pb.NodeStats(
        node_name=node_name,
        time=timestamp(sample.time),
        cpu_capacity_millis=sample.cpu_capacity_millis,
        cpu_usage_cores=sample.cpu_usage_cores,
        memory_total_bytes=sample.memory_total,
        memory_available_bytes=sample.memory_available,
        cpu_pressure=pressure_to_pb(sample.cpu_pressure),
        memory_pressure=pressure_to_pb(sample.memory_pressure),
        io_pressure=pressure_to_pb(sample.io_pressure),
        cgroup_version=cgroup_version,
        memory_used_bytes=sample.memory_used,
        network_bytes_per_second=sample.network_bytes_per_second,
        network_capacity_bytes_per_second=sample.network_capacity_bytes_per_second,
        node_cgroup=node_cgroup,
        processes=[
            pb.ProcessStats(
                ref=pb.ProcessRef(namespace=ref.namespace, name=ref.name),
                cpu_seconds=s.cpu_seconds,
                cpu_throttled_seconds=s.cpu_throttled_seconds,
                memory_current_bytes=s.memory_current,
                memory_peak_bytes=s.memory_peak,
                cpu_usage_cores=s.cpu_usage_cores,
            )
            for ref, s in sorted(sample.processes.items(), key=lambda kv: str(kv[0]))
        ],
    )
