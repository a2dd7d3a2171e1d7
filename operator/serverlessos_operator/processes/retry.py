"""The signal that something is not done yet, and when to try again."""

from __future__ import annotations


class Retry(Exception):
    """Not done yet; try again after `delay` (a signal to the caller, not a failure)."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class Refused(Exception):
    """A node refused the process (a limit it cannot take, a missing privilege). It is
    placed again, but as a failure: with backoff, and said in its Synced condition, so
    that a process every node refuses is not retried at full speed forever."""

    reason = "NodeRefused"
