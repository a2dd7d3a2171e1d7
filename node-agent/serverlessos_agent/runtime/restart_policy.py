"""Restart policy and exponential back-off, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import Reason, RestartPolicy, Termination


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n: base * 2**n, capped; a run that stayed up
    for reset_after seconds resets the count (as the kubelet does)."""

    base: float = 1.0
    cap: float = 300.0
    reset_after: float = 600.0

    def delay(self, step: int) -> float:
        return float(min(self.cap, self.base * (2 ** min(step, 32))))

    def after_exit(self, step: int, run_seconds: float) -> tuple[float, int]:
        """(delay before the next run, the step to remember for the exit after it)."""
        if run_seconds >= self.reset_after:
            step = 0
        return self.delay(step), step + 1


def should_restart(policy: RestartPolicy, termination: Termination) -> bool:
    if policy is RestartPolicy.ALWAYS:
        return True
    if policy is RestartPolicy.NEVER:
        return False
    return termination.reason is not Reason.COMPLETED
