"""A process's status from what its agent reports (a start's reply, an event, a restore)."""

from __future__ import annotations

from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from ..api.v1alpha1 import ProcessPhase
from ..infra.events import EventSink
from .agent_view import status_from_agent
from .book import ProcessBook, ProcessInfo


class AgentStatus:
    def __init__(self, book: ProcessBook, events: EventSink) -> None:
        self.book = book
        self.events = events

    async def apply(self, info: ProcessInfo, node: str, process: pb.Process) -> None:
        """Write the status the agent's record means, with an Event when the phase moves.
        Call it under the process's lock."""
        before = info.phase
        info.held_cpu = process.spec.resources.cpu_millis
        status = status_from_agent(process, node, info.conditions)
        status["observedGeneration"] = info.generation
        await self.book.patch(info, status)
        phase: ProcessPhase = status["phase"]
        if phase != before:
            kind = "Warning" if phase == ProcessPhase.FAILED else "Normal"
            detail = f"pid {process.pid}" if process.pid else status["message"] or ""
            self.events.post(info.ref, kind, phase, f"{phase} on {node} {detail}".strip())
