"""Every RPC of a real agent, driven with random and hostile input (hypothesis).

The property: whatever the request, the agent answers within its deadline with one of
the codes its API documents for a caller's mistake (never UNKNOWN or INTERNAL, never
a hang), and stays healthy: it still lists its processes and its health check says
SERVING. Commands are drawn from a few harmless ones (a random argv[0] could name
a real program), everything else is arbitrary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(600)

# What a caller's mistake may get back; anything else (UNKNOWN, INTERNAL, a deadline
# the agent let pass) is a bug.
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Names: mostly plausible ones (so calls reach deep), some hostile.
HOSTILE = st.sampled_from(
    ["", "..", "../etc", "a/b", "A", "x" * 64, "-x", "x-", "é", "a\0b", " ", "default"]
)
LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")
NAME = st.one_of(LABEL, HOSTILE, st.text(max_size=80))
TEXT = st.text(max_size=200)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
COMMANDS = st.sampled_from([["sleep", "300"], ["true"], ["false"], ["/nonexistent/x"], [""], []])


def refs() -> st.SearchStrategy[pb.ProcessRef]:
    return st.builds(pb.ProcessRef, namespace=NAME, name=NAME)


def resources() -> st.SearchStrategy[pb.Resources]:
    return st.builds(
        pb.Resources,
        cpu_millis=st.one_of(INT64, st.integers(0, 4000)),
        memory_bytes=st.one_of(INT64, st.integers(0, 2**31)),
    )


def specs() -> st.SearchStrategy[pb.ProcessSpec]:
    return st.builds(
        lambda name, ns, uid, argv, extra, env, workdir, res, policy: pb.ProcessSpec(
            name=name,
            owner=pb.Owner(namespace=ns, uid=uid),
            argv=[*argv, *extra] if argv else [],
            env=env,
            working_dir=workdir,
            resources=res,
            restart_policy=policy,
        ),
        NAME,
        NAME,
        TEXT,
        COMMANDS,
        st.lists(TEXT, max_size=4),
        st.dictionaries(st.one_of(st.from_regex(r"\A[A-Z_]{1,8}\Z"), TEXT), TEXT, max_size=4),
        st.one_of(st.just(""), st.just("/tmp"), TEXT),
        resources(),
        st.integers(-1, 5),
    )


def leases() -> st.SearchStrategy[pb.Lease]:
    return st.builds(
        pb.Lease,
        seconds=st.floats(allow_nan=True, allow_infinity=True),
        fallback=resources(),
    )


def chunks() -> st.SearchStrategy[list[pb.CheckpointChunk]]:
    def file_start(path: str, size: int, directory: bool, link: str, mode: int) -> Any:
        return pb.CheckpointChunk(
            file_start=pb.FileStart(
                path=path, size=size, directory=directory, symlink_target=link, mode=mode
            )
        )

    paths = st.one_of(
        st.sampled_from(["images/a", "work/x", "logs/l", "work/d/e", "work/../x", "/etc/x"]),
        TEXT,
    )
    part = st.one_of(
        st.builds(
            file_start,
            paths,
            st.integers(0, 2**64 - 1),
            st.booleans(),
            st.one_of(st.just(""), st.just("/"), TEXT),
            st.integers(0, 2**32 - 1),
        ),
        st.builds(lambda d: pb.CheckpointChunk(data=d), st.binary(max_size=64)),
        st.builds(
            lambda d: pb.CheckpointChunk(file_end=pb.FileEnd(sha256=d)),
            st.one_of(st.binary(max_size=40), st.just(hashlib.sha256(b"").digest())),
        ),
        st.builds(lambda n: pb.CheckpointChunk(done=pb.CheckpointDone(files=n)), st.integers(0, 5)),
    )
    header = st.builds(
        lambda mid, spec, workdir: pb.CheckpointChunk(
            header=pb.CheckpointHeader(
                migration_id=mid, process=pb.Process(spec=spec), workdir=workdir
            )
        ),
        st.one_of(st.uuids().map(str), NAME),
        specs(),
        TEXT,
    )
    return st.lists(part, max_size=8).flatmap(
        lambda rest: st.one_of(header.map(lambda h: [h, *rest]), st.just(rest))
    )


def answered(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        code = exc.code()
        assert code in ANSWERS, f"{code.name}: {exc.details()}"
        return code
    return grpc.StatusCode.OK


def assert_healthy(agent: AgentProcess) -> None:
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died"
    agent.stub.ListProcesses(pb.ListProcessesRequest(), timeout=5)
    assert agent.channel is not None
    health = health_pb2_grpc.HealthStub(agent.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def fuzzed(agent_factory: Callable[..., AgentProcess], criu: str) -> Iterator[AgentProcess]:
    agent = agent_factory(extra=["--criu", criu, "--max-checkpoint-size", "1Mi"])
    yield agent
    assert_healthy(agent)


@FUZZ
@given(spec=specs(), lease=st.one_of(st.none(), leases()))
def test_lifecycle_rpcs_take_anything(fuzzed: AgentProcess, spec: pb.ProcessSpec, lease) -> None:
    stub = fuzzed.stub
    request = pb.StartProcessRequest(spec=spec)
    if lease is not None:
        request.lease.CopyFrom(lease)
    answered(lambda: stub.StartProcess(request, timeout=10))
    ref = pb.ProcessRef(namespace=spec.owner.namespace, name=spec.name)
    answered(lambda: stub.GetProcess(pb.GetProcessRequest(ref=ref), timeout=10))
    answered(
        lambda: stub.UpdateResources(
            pb.UpdateResourcesRequest(ref=ref, resources=spec.resources), timeout=10
        )
    )
    answered(lambda: list(stub.ReadLogs(pb.ReadLogsRequest(ref=ref, tail_lines=3), timeout=10)))
    stop = pb.StopProcessRequest(ref=ref, grace_period_seconds=0)
    answered(lambda: stub.StopProcess(stop, timeout=20))
    assert_healthy(fuzzed)


@FUZZ
@given(
    ref=refs(),
    res=resources(),
    lease=st.one_of(st.none(), leases()),
    grace=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    tail=st.integers(-(2**31), 2**31 - 1),
    namespace=NAME,
    seq=st.integers(0, 2**64 - 1),
)
def test_queries_and_updates_of_any_name_take_anything(
    fuzzed: AgentProcess, ref, res, lease, grace, tail, namespace, seq
) -> None:
    stub = fuzzed.stub
    update = pb.UpdateResourcesRequest(ref=ref, resources=res)
    if lease is not None:
        update.lease.CopyFrom(lease)
    answered(lambda: stub.UpdateResources(update, timeout=10))
    stop = pb.StopProcessRequest(ref=ref)
    if grace is not None:
        stop.grace_period_seconds = grace
    answered(lambda: stub.StopProcess(stop, timeout=20))
    answered(lambda: list(stub.ReadLogs(pb.ReadLogsRequest(ref=ref, tail_lines=tail), timeout=10)))
    answered(lambda: stub.ListProcesses(pb.ListProcessesRequest(namespace=namespace), timeout=10))
    answered(lambda: stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=10))
    # A watch from anywhere in the sequence either ends in a refusal or streams: a short
    # deadline ends the streaming ones (DEADLINE_EXCEEDED is the caller's own deadline).
    watch = stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=seq), timeout=0.5)
    try:
        for _ in watch:
            pass
    except grpc.RpcError as exc:
        assert exc.code() in ANSWERS | {grpc.StatusCode.DEADLINE_EXCEEDED}, exc.details()


@FUZZ
@given(stream=chunks())
def test_any_checkpoint_stream_is_refused_or_taken_whole(
    fuzzed: AgentProcess, stream: list[pb.CheckpointChunk]
) -> None:
    code = answered(lambda: fuzzed.stub.ReceiveCheckpoint(iter(stream), timeout=10))
    outside = [
        p
        for p in fuzzed.state_dir.rglob("*")
        if not p.is_relative_to(fuzzed.state_dir / "migrations")
        and not p.is_relative_to(fuzzed.state_dir / "processes")
    ]
    assert {p.name for p in outside} <= {
        "agent.lock",
        "agent.json",
        "events.jsonl",
        "agent.log",
        "processes",
        "migrations",
    }, (code, outside)


@FUZZ
@given(
    migration_id=st.one_of(st.uuids().map(str), NAME),
    ref=refs(),
    commit=st.booleans(),
    timeout=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    mode=st.integers(-1, 5),
    endpoint=st.sampled_from(["", "127.0.0.1:1", "not a host:x"]),
)
def test_migration_rpcs_of_unknown_migrations_take_anything(
    fuzzed: AgentProcess, migration_id, ref, commit, timeout, mode, endpoint
) -> None:
    stub = fuzzed.stub
    answered(
        lambda: stub.RestoreProcess(pb.RestoreProcessRequest(migration_id=migration_id), timeout=10)
    )
    finish = pb.FinishMigrationRequest(migration_id=migration_id, ref=ref, commit=commit)
    if timeout is not None:
        finish.timeout_seconds = timeout
    answered(lambda: stub.FinishMigration(finish, timeout=20))
    checkpoint = pb.CheckpointProcessRequest(
        ref=ref, migration_id=migration_id, target_endpoint=endpoint, mode=mode
    )
    answered(lambda: list(stub.CheckpointProcess(checkpoint, timeout=20)))
