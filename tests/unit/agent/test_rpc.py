"""The gRPC edge, called directly: domain errors to status codes, the unary wrapper
(errors, timing), and proto <-> domain translation."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent import convert
from serverlessos_agent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
)
from serverlessos_agent.observe.metrics import Metrics
from serverlessos_agent.records import (
    Lease,
    ProcessRecord,
    ProcessSpec,
    Resources,
    RestartPolicy,
    State,
)
from serverlessos_agent.rpc.status import code_for, unary
from serverlessos_agent.runtime.criu import CriuError
from serverlessos_agent.storage.event_journal import Event, EventType


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (OutOfRange("x"), grpc.StatusCode.OUT_OF_RANGE),
        (CriuError("x"), grpc.StatusCode.FAILED_PRECONDITION),  # a subclass: its base's code
        (AgentError("x"), grpc.StatusCode.UNKNOWN),
    ],
)
def test_every_domain_error_has_its_status_code(error: AgentError, code: grpc.StatusCode) -> None:
    assert code_for(error) == code


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted  # as grpc.aio's abort does: the handler goes no further


class Servicer:
    def __init__(self) -> None:
        self.metrics = Metrics()

    @unary
    async def Double(self, request: int, context: Any) -> int:
        return request * 2

    @unary
    async def Refuse(self, request: int, context: Any) -> int:
        raise NotFound("no process 'x' in namespace 'default'")

    @unary
    async def Break(self, request: int, context: Any) -> int:
        raise RuntimeError("a bug")


def _count(servicer: Servicer, method: str, code: str) -> float | None:
    return servicer.metrics.registry.get_sample_value(
        "serverlessos_agent_rpc_duration_seconds_count", {"method": method, "code": code}
    )


def test_the_unary_wrapper_maps_errors_and_times_every_call() -> None:
    async def scenario() -> None:
        servicer = Servicer()
        context = FakeContext()
        assert await servicer.Double(21, context) == 42
        assert context.aborted is None
        with pytest.raises(Aborted):
            await servicer.Refuse(1, context)
        assert context.aborted == (
            grpc.StatusCode.NOT_FOUND,
            "no process 'x' in namespace 'default'",
        )
        with pytest.raises(Aborted):
            await servicer.Break(1, context)
        assert context.aborted == (
            grpc.StatusCode.INTERNAL,
            "internal error in the agent: RuntimeError('a bug')",
        )
        assert _count(servicer, "Double", "OK") == 1
        assert _count(servicer, "Refuse", "NOT_FOUND") == 1
        assert _count(servicer, "Break", "INTERNAL") == 1

    asyncio.run(scenario())


def _record() -> ProcessRecord:
    return ProcessRecord(
        uid="u1",
        spec=ProcessSpec(
            name="web",
            argv=("sleep", "60"),
            namespace="team-a",
            owner_uid="o1",
            env={"A": "b"},
            working_dir="/srv",
            resources=Resources(500, 64 * 2**20),
            restart_policy=RestartPolicy.ON_FAILURE,
        ),
        state=State.BACKOFF,
        created_at=100.0,
        cgroup="sos/team-a/web",
        log_path="/state/processes/team-a/web/logs/output.log",
        workdir="/state/processes/team-a/web/work",
        restarts=2,
        next_restart_at=130.5,
        message="restarting in 2s after: exited with code 1",
        lease=Lease(seconds=6, fallback=Resources(cpu_millis=250)),
        lease_expires_at=140.0,
    )


def test_a_spec_survives_the_round_trip() -> None:
    spec = _record().spec
    assert convert.spec_from_pb(convert.spec_to_pb(spec)) == spec
    bare = convert.spec_from_pb(pb.ProcessSpec(name="x", argv=["true"]))
    assert bare.namespace == "default" and bare.restart_policy is RestartPolicy.ALWAYS
    assert convert.ref_from_pb(pb.ProcessRef(name="x")).namespace == "default"


def test_a_record_as_the_api_shows_it() -> None:
    record = _record()
    msg = convert.process_to_pb(record, "/sys/fs/cgroup/sos/team-a/web")
    assert msg.state == pb.PROCESS_STATE_BACKOFF
    assert msg.cgroup == "/sys/fs/cgroup/sos/team-a/web"
    assert msg.next_restart_at.ToNanoseconds() == 130_500_000_000
    assert msg.lease.seconds == 6 and msg.lease.fallback.cpu_millis == 250
    assert msg.lease_expires_at.seconds == 140
    assert not msg.HasField("last_termination")
    record.state = State.RUNNING
    assert not convert.process_to_pb(record).next_restart_at.seconds, "only while backing off"
    assert convert.process_to_pb(record).cgroup == "sos/team-a/web"
    assert convert.lease_from_pb(msg.lease) == record.lease


def test_an_event_carries_the_record_as_of_then() -> None:
    record = _record()
    event = Event(7, 150.0, EventType.RESOURCES_UPDATED, "team-a", record.to_json(), "leased")
    msg = convert.event_to_pb(event)
    assert (msg.seq, msg.type, msg.message) == (7, pb.EVENT_TYPE_RESOURCES_UPDATED, "leased")
    assert msg.process.spec.name == "web" and msg.process.restarts == 2
