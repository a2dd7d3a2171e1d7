"""One object's failure must never hold up the others.

Every loop over many objects (waiting processes, budgets, agents, rebalancing, the
startup listing) runs each object's work through `Isolation.run`: a failure is
caught, reported for that object (a condition and a Warning Event, by the caller's
`report`), and the object is retried with exponential backoff while the loop goes
on with the rest. A later success forgets the failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Failure:
    what: str  # e.g. "placing ns/name"
    error: Exception
    attempts: int  # consecutive failures, this one included
    retry_in: float  # seconds

    @property
    def message(self) -> str:
        return f"{self.what} failed: {_text(self.error)}; retrying in {self.retry_in:.0f}s"


def _text(error: Exception) -> str:
    return str(error) or type(error).__name__


class Backoff(Generic[K]):
    """Per-object retry delays: each consecutive failure doubles the wait, from `base`
    up to `cap` seconds."""

    def __init__(
        self, base: float = 5.0, cap: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.base = base
        self.cap = cap
        self.clock = clock
        self._failures: dict[K, tuple[int, float]] = {}  # key -> (attempts, retry at)

    def due(self, key: K) -> bool:
        entry = self._failures.get(key)
        return entry is None or self.clock() >= entry[1]

    def failed(self, key: K) -> tuple[int, float]:
        """Record a failure: (consecutive attempts, seconds until the next try)."""
        attempts = self._failures.get(key, (0, 0.0))[0] + 1
        delay = min(self.cap, self.base * 2 ** min(attempts - 1, 16))
        self._failures[key] = (attempts, self.clock() + delay)
        return attempts, delay

    def succeeded(self, key: K) -> bool:
        """Forget its failures; True if it had any (a reported problem to clear)."""
        return self._failures.pop(key, None) is not None

    def failing(self, key: K) -> bool:
        return key in self._failures

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


Report = Callable[[Failure], Awaitable[None]]
Recover = Callable[[], Awaitable[None]]


class Isolation(Generic[K]):
    """Runs one object's work so that its failure stays its own."""

    def __init__(self, backoff: Backoff[K] | None = None) -> None:
        self.backoff: Backoff[K] = backoff or Backoff()

    def due(self, key: K) -> bool:
        return self.backoff.due(key)

    async def run(
        self,
        key: K,
        what: str,
        work: Callable[[], Awaitable[None]],
        report: Report | None = None,
        recovered: Recover | None = None,
    ) -> bool:
        """Run `work` for `key`; False if it failed (reported, backed off)."""
        try:
            await work()
        except Exception as error:
            attempts, delay = self.backoff.failed(key)
            failure = Failure(what, error, attempts, delay)
            log.warning("%s (attempt %d)", failure.message, attempts, exc_info=attempts == 1)
            if report is not None:
                try:
                    await report(failure)
                except Exception:
                    log.exception("reporting that %s failed, failed too", what)
            return False
        if self.backoff.succeeded(key) and recovered is not None:
            try:
                await recovered()
            except Exception:
                log.exception("clearing the reported failure of %s failed", what)
        return True

    def forget(self, key: K) -> None:
        self.backoff.forget(key)
