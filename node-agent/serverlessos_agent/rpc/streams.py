"""Bounds on the long-lived streams (WatchProcesses, followed ReadLogs): so many at once
per peer address and in all, so that no client can hold the agent's loop, memory or file
descriptors with streams it never reads. A stream past a bound is RESOURCE_EXHAUSTED."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ResourceExhausted


def peer_host(peer: str) -> str:
    """The address part of grpc's peer string ("ipv4:10.0.0.1:5555" -> "ipv4:10.0.0.1")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer  # unix sockets and the like: the whole string


@dataclass
class StreamSlots:
    what: str  # "watch streams", "log followers"
    per_peer: int = 16
    total: int = 128
    _held: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def hold(self, peer: str) -> Iterator[None]:
        host = peer_host(peer)
        if sum(self._held.values()) >= self.total:
            raise ResourceExhausted(f"this agent serves at most {self.total} {self.what} at once")
        if self._held.get(host, 0) >= self.per_peer:
            raise ResourceExhausted(
                f"at most {self.per_peer} {self.what} at once from one client ({host})"
            )
        self._held[host] = self._held.get(host, 0) + 1
        try:
            yield
        finally:
            self._held[host] -= 1
            if not self._held[host]:
                del self._held[host]
