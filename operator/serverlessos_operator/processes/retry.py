"""The signal that something is not done yet, and when to try again."""

from __future__ import annotations


class Retry(Exception):
    """Not done yet; try again after `delay` (a signal to the caller, not a failure)."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay
