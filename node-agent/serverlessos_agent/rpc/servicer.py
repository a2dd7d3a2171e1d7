"""The gRPC edge: decode a request, call the domain, encode the reply. No rules here:
errors become status codes in status.py, messages become records in ../convert.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.agent.v1alpha1 import agent_pb2_grpc as pb_grpc
from serverlessos.auth.identity import peer_identity

from .. import convert
from ..cgroup import CgroupDriver
from ..errors import AgentError, InvalidArgument
from ..migration.finish import MigrationFinisher
from ..migration.source import CheckpointSource
from ..migration.target import CheckpointTarget
from ..observe.metrics import Metrics
from ..observe.stats import NodeSample
from ..records import ProcessRecord, Ref
from ..runtime.lifecycle import Lifecycle
from ..runtime.limits import ResourceUpdates
from ..runtime.process_table import ProcessTable
from ..runtime.validation import check_label
from ..storage.event_journal import EventJournal
from ..storage.log_files import follow, read_spans, tail
from .status import code_for, internal_error, unary
from .streams import StreamSlots

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _finish_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """A caller that gives up (deadline, disconnect) must not leave a start or a stop
    half done: the work runs in its own task, shielded from the RPC's cancellation."""
    return await asyncio.shield(asyncio.get_running_loop().create_task(work))


def _ref(ref: pb.ProcessRef) -> Ref:
    result = convert.ref_from_pb(ref)
    check_label("name", result.name)
    check_label("namespace", result.namespace)
    return result


class AgentServicer(pb_grpc.AgentServicer):
    def __init__(
        self,
        node_name: str,
        *,
        table: ProcessTable,
        lifecycle: Lifecycle,
        resources: ResourceUpdates,
        journal: EventJournal,
        cgroups: CgroupDriver,
        log_keep: int,
        metrics: Metrics,
        latest_sample: Callable[[], NodeSample],
        source: CheckpointSource,
        target: CheckpointTarget,
        finisher: MigrationFinisher,
        node_cgroup: str = "",
    ) -> None:
        self._node_name = node_name
        self._node_cgroup = node_cgroup
        self.metrics = metrics  # the unary wrapper times every call into it
        self._table = table
        self._lifecycle = lifecycle
        self._resources = resources
        self._journal = journal
        self._cgroups = cgroups
        self._log_keep = log_keep
        self._watchers = StreamSlots("watch streams")
        self._followers = StreamSlots("log followers")
        self._latest_sample = latest_sample
        self._source = source
        self._target = target
        self._finisher = finisher

    def _pb(self, record: ProcessRecord) -> pb.Process:
        # Replies never echo environment values (see ProcessRecord.redacted).
        return convert.process_to_pb(record.redacted(), self._cgroups.display_path(record.cgroup))

    @unary
    async def StartProcess(self, request: pb.StartProcessRequest, context: Any) -> pb.Process:
        spec = convert.spec_from_pb(request.spec)
        lease = convert.lease_from_pb(request.lease) if request.HasField("lease") else None
        record = await _finish_even_if_cancelled(self._lifecycle.start_process(spec, lease))
        return self._pb(record)

    @unary
    async def StopProcess(self, request: pb.StopProcessRequest, context: Any) -> pb.Process:
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        ref = _ref(request.ref)
        record = await _finish_even_if_cancelled(self._lifecycle.stop_process(ref, grace))
        return self._pb(record)

    @unary
    async def GetProcess(self, request: pb.GetProcessRequest, context: Any) -> pb.Process:
        return self._pb(self._table.get(_ref(request.ref)))

    @unary
    async def ListProcesses(
        self, request: pb.ListProcessesRequest, context: Any
    ) -> pb.ListProcessesResponse:
        return pb.ListProcessesResponse(
            processes=[self._pb(r) for r in self._table.list(request.namespace)],
            revision=self._journal.revision,
        )

    @unary
    async def UpdateResources(self, request: pb.UpdateResourcesRequest, context: Any) -> pb.Process:
        lease = convert.lease_from_pb(request.lease) if request.HasField("lease") else None
        record = await self._resources.update_resources(
            _ref(request.ref), convert.resources_from_pb(request.resources), lease
        )
        return self._pb(record)

    @unary
    async def GetNodeStats(self, request: pb.GetNodeStatsRequest, context: Any) -> pb.NodeStats:
        return convert.node_stats_to_pb(
            self._node_name, self._cgroups.version, self._latest_sample(), self._node_cgroup
        )

    async def WatchProcesses(
        self, request: pb.WatchProcessesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ProcessEvent]:
        try:
            with self._watchers.hold(context.peer()):
                async for event in self._journal.watch(request.since_seq):
                    if not request.namespace or event.namespace == request.namespace:
                        yield convert.event_to_pb(event)
        except AgentError as exc:
            await context.abort(code_for(exc), str(exc))

    async def ReadLogs(
        self, request: pb.ReadLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.LogChunk]:
        try:
            ref = _ref(request.ref)
            record = self._table.get(ref)
            if request.tail_lines < 0:
                raise InvalidArgument("tail_lines must be >= 0 (0 = everything retained)")
        except AgentError as exc:
            await context.abort(code_for(exc), str(exc))
            return
        path = Path(record.log_path)
        spans, offset = tail(path, request.tail_lines, self._log_keep)
        for data in read_spans(spans):  # bounded pieces, never the whole log at once
            yield pb.LogChunk(data=data)
        if not request.follow:
            return
        try:
            with self._followers.hold(context.peer()):
                async for chunk in follow(path, offset, lambda: self._table.finished(record)):
                    yield pb.LogChunk(data=chunk)
        except AgentError as exc:
            await context.abort(code_for(exc), str(exc))

    # ----- live migration --------------------------------------------------

    async def CheckpointProcess(
        self, request: pb.CheckpointProcessRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CheckpointProgress]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        queue: asyncio.Queue[pb.CheckpointProgress] = asyncio.Queue()
        try:
            ref = _ref(request.ref)
            # Finished even if the caller goes away: a half-done checkpoint would leave
            # the process frozen (the work resumes it itself when it fails).
            work = asyncio.get_running_loop().create_task(
                self._source.checkpoint(
                    ref,
                    request.migration_id,
                    request.target_endpoint,
                    request.mode,
                    queue.put,
                    target_node=request.target_node,
                    ticket=request.ticket,
                )
            )
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                await work  # raises its error
                return
        except AgentError as exc:
            code = code_for(exc)
            await context.abort(code, str(exc))
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            log.exception("CheckpointProcess failed")
            await context.abort(code, internal_error(exc))
        finally:
            self.metrics.rpc_duration.labels("CheckpointProcess", code.name).observe(
                time.perf_counter() - started
            )

    async def ReceiveCheckpoint(
        self,
        request_iterator: AsyncIterator[pb.CheckpointChunk],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ReceiveCheckpointResponse:
        try:
            sender = peer_identity(context.auth_context())
            received = await self._target.receive(request_iterator, sender)
        except AgentError as exc:
            await context.abort(code_for(exc), str(exc))
            raise AssertionError("unreachable") from exc
        return pb.ReceiveCheckpointResponse(received_bytes=received)

    @unary
    async def RestoreProcess(
        self, request: pb.RestoreProcessRequest, context: Any
    ) -> pb.RestoreProcessResponse:
        record, resumed_at, seconds = await _finish_even_if_cancelled(
            self._target.restore(request.migration_id)
        )
        return pb.RestoreProcessResponse(
            process=self._pb(record),
            resumed_at=convert.timestamp(resumed_at),
            restore_seconds=seconds,
        )

    @unary
    async def FinishMigration(
        self, request: pb.FinishMigrationRequest, context: Any
    ) -> pb.FinishMigrationResponse:
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else 600.0
        outcome = await _finish_even_if_cancelled(
            self._finisher.finish(request.migration_id, _ref(request.ref), request.commit, timeout)
        )
        return pb.FinishMigrationResponse(outcome=outcome)
