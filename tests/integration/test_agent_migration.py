"""The agent's live-migration API with real CRIU: bad requests get clear errors, and a
checkpoint that cannot reach its target leaves the process running where it was.
(Whole migrations between two agents run in e2e/test_migration.py.)"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)

COUNTER = (
    "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.05)\n"
)


@pytest.fixture
def criu_agent(agent_factory: Callable[..., AgentProcess], criu: str) -> AgentProcess:
    return agent_factory(extra=["--criu", criu])


def ref(name: str) -> pb.ProcessRef:
    return pb.ProcessRef(namespace="default", name=name)


def checkpoint(agent: AgentProcess, name: str, target: str) -> list[pb.CheckpointProgress]:
    request = pb.CheckpointProcessRequest(
        ref=ref(name),
        migration_id="m-test",
        target_endpoint=target,
        mode=pb.MIGRATION_MODE_STOP_AND_COPY,
    )
    return list(agent.stub.CheckpointProcess(request, timeout=60))


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_node_without_criu_says_so(agent_factory: Callable[..., AgentProcess]) -> None:
    agent = agent_factory(extra=["--criu", "/nonexistent/criu"])
    agent.run("c", ["python3", "-c", COUNTER])
    code, details = code_of(lambda: checkpoint(agent, "c", "127.0.0.1:1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "has no CRIU" in details


def test_bad_checkpoint_requests(criu_agent: AgentProcess) -> None:
    code, details = code_of(lambda: checkpoint(criu_agent, "nope", "127.0.0.1:1"))
    assert code == grpc.StatusCode.NOT_FOUND
    criu_agent.run("c", ["python3", "-c", COUNTER])
    code, details = code_of(lambda: checkpoint(criu_agent, "c", ""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "target_endpoint" in details
    criu_agent.run("done", ["true"])
    criu_agent.wait_for("done", lambda p: p.state == pb.PROCESS_STATE_SUCCEEDED)
    code, details = code_of(lambda: checkpoint(criu_agent, "done", "127.0.0.1:1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not Running" in details
    # A bad migration id is refused before the process is touched: it stays Running.
    for bad in ("", "../x", ".hidden"):
        request = pb.CheckpointProcessRequest(
            ref=ref("c"),
            migration_id=bad,
            target_endpoint="127.0.0.1:1",
            mode=pb.MIGRATION_MODE_STOP_AND_COPY,
        )
        code, details = code_of(lambda r=request: list(criu_agent.stub.CheckpointProcess(r)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bad migration id" in details
    process = criu_agent.stub.GetProcess(pb.GetProcessRequest(ref=ref("c")))
    assert process.state == pb.PROCESS_STATE_RUNNING and not process.message
    assert pb.EVENT_TYPE_FROZEN not in [
        e.type for e in _events(criu_agent) if e.process.spec.name == "c"
    ]


def test_an_unreachable_target_leaves_the_process_running_where_it_was(
    criu_agent: AgentProcess,
) -> None:
    before = criu_agent.run("c", ["python3", "-c", COUNTER], memory=64 * 2**20)
    log = Path(before.log_path)
    time.sleep(0.5)
    code, details = code_of(lambda: checkpoint(criu_agent, "c", "127.0.0.1:1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "sending the checkpoint to 127.0.0.1:1 failed" in details
    after = criu_agent.stub.GetProcess(pb.GetProcessRequest(ref=ref("c")))
    assert after.state == pb.PROCESS_STATE_RUNNING and after.pid == before.pid
    assert after.message.startswith("resumed: checkpoint failed")
    count = int(log.read_text().split()[-1])
    time.sleep(0.5)
    assert int(log.read_text().split()[-1]) > count, "it runs on (resumed, not restarted)"
    assert after.restarts == 0
    events = [e.type for e in _events(criu_agent) if e.process.spec.name == "c"]
    assert events[-2:] == [pb.EVENT_TYPE_FROZEN, pb.EVENT_TYPE_RESUMED]
    assert not list((criu_agent.state_dir / "migrations").iterdir()), "nothing left behind"


def _events(agent: AgentProcess) -> Iterator[pb.ProcessEvent]:
    listed = agent.stub.ListProcesses(pb.ListProcessesRequest())
    stream = agent.stub.WatchProcesses(pb.WatchProcessesRequest(since_seq=0), timeout=2)
    try:
        for event in stream:
            yield event
            if event.seq >= listed.revision:
                return
    except grpc.RpcError:
        return


def test_a_checkpoint_for_another_state_path_is_refused_up_front(criu_agent: AgentProcess) -> None:
    process = pb.Process(
        spec=pb.ProcessSpec(name="c", owner=pb.Owner(namespace="default", uid="u"), argv=["x"])
    )
    header = pb.CheckpointHeader(migration_id="m1", process=process, workdir="/elsewhere/work")
    code, details = code_of(
        lambda: criu_agent.stub.ReceiveCheckpoint(iter([pb.CheckpointChunk(header=header)]))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "same --state-dir path" in details


def test_a_checkpoint_path_escaping_its_directory_is_refused(criu_agent: AgentProcess) -> None:
    workdir = str(criu_agent.state_dir / "processes/default/c/work")
    process = pb.Process(
        spec=pb.ProcessSpec(name="c", owner=pb.Owner(namespace="default", uid="u"), argv=["x"])
    )
    chunks = [
        pb.CheckpointChunk(
            header=pb.CheckpointHeader(migration_id="m2", process=process, workdir=workdir)
        ),
        pb.CheckpointChunk(file_start=pb.FileStart(path="work/../../../../etc/x", size=1)),
    ]
    code, details = code_of(lambda: criu_agent.stub.ReceiveCheckpoint(iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "refusing checkpoint path" in details
    assert not (criu_agent.state_dir / "migrations" / "m2").exists()


def test_restore_and_finish_of_unknown_migrations(criu_agent: AgentProcess) -> None:
    code, details = code_of(
        lambda: criu_agent.stub.RestoreProcess(pb.RestoreProcessRequest(migration_id="nope"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "no checkpoint received" in details
    reply = criu_agent.stub.FinishMigration(
        pb.FinishMigrationRequest(migration_id="nope", ref=ref("x"), commit=False)
    )
    assert reply.outcome == "nothing to do"


def _header(
    agent: AgentProcess, migration_id: str, namespace: str, name: str
) -> pb.CheckpointChunk:
    process = pb.Process(
        spec=pb.ProcessSpec(name=name, owner=pb.Owner(namespace=namespace, uid="u"), argv=["x"])
    )
    workdir = str(agent.state_dir / "processes" / namespace / name / "work")
    return pb.CheckpointChunk(
        header=pb.CheckpointHeader(migration_id=migration_id, process=process, workdir=workdir)
    )


def _tree(root: Path) -> set[tuple[str, int]]:
    """Every entry under the agent's state and when it last changed (but the checkpoint
    area itself, where a refused checkpoint's directory comes and goes)."""
    return {
        (str(p.relative_to(root)), p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if p != root / "migrations"
    }


@pytest.mark.parametrize(
    ("migration_id", "namespace", "name", "detail"),
    [
        ("m3", "../../etc", "c", "namespace"),
        ("m3", "default", "../agent.lock", "name"),
        ("../m3", "default", "c", "bad migration id"),
    ],
)
def test_a_peer_cannot_name_paths_outside_its_checkpoint(
    criu_agent: AgentProcess, migration_id: str, namespace: str, name: str, detail: str
) -> None:
    before = _tree(criu_agent.state_dir)
    chunks = [_header(criu_agent, migration_id, namespace, name)]
    code, details = code_of(lambda: criu_agent.stub.ReceiveCheckpoint(iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and detail in details
    assert _tree(criu_agent.state_dir) == before, "nothing changed in the agent's state"


def test_a_symlink_escape_from_a_peer_is_refused_and_nothing_outside_changes(
    criu_agent: AgentProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _tree(criu_agent.state_dir)
    data = b"owned"
    chunks = [
        _header(criu_agent, "m4", "default", "c"),
        pb.CheckpointChunk(file_start=pb.FileStart(path="work/out", symlink_target=str(outside))),
        pb.CheckpointChunk(file_start=pb.FileStart(path="work/out/evil", size=len(data))),
        pb.CheckpointChunk(data=data),
        pb.CheckpointChunk(file_end=pb.FileEnd(sha256=hashlib.sha256(data).digest())),
        pb.CheckpointChunk(done=pb.CheckpointDone(files=1)),
    ]
    code, details = code_of(lambda: criu_agent.stub.ReceiveCheckpoint(iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "symlink" in details
    assert list(outside.iterdir()) == []
    assert not (criu_agent.state_dir / "migrations" / "m4").exists()
    assert _tree(criu_agent.state_dir) == before
    assert criu_agent.stub.ListProcesses(pb.ListProcessesRequest()) is not None  # still serving
