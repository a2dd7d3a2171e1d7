"""Running processes, the plain parts called directly: validation, back-off, restart decisions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from serverlessos_agent.errors import InvalidArgument
from serverlessos_agent.runtime.records import (
    ProcessSpec,
    Reason,
    Resources,
    RestartPolicy,
    Termination,
)
from serverlessos_agent.runtime.restart_policy import Backoff, should_restart
from serverlessos_agent.runtime.validation import NodeCapacity, check_spec

CAPACITY = NodeCapacity(cpu_millis=2000, memory_bytes=8 * 2**30)


def test_validation_accepts_a_good_spec() -> None:
    check_spec(
        ProcessSpec(name="web-1", argv=("sleep", "1"), resources=Resources(500, 2**30)), CAPACITY
    )


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ProcessSpec(name="a", argv=()), "argv is empty"),
        (ProcessSpec(name="-a", argv=("x",)), "DNS-1123"),
        (ProcessSpec(name="a", argv=("x", "a\0b")), "NUL"),
        (ProcessSpec(name="a", argv=("x",), env={"A=B": "c"}), "environment variable name"),
        (ProcessSpec(name="a", argv=("x",), resources=Resources(cpu_millis=2001)), "capacity"),
        (ProcessSpec(name="a", argv=("x",), namespace=""), "namespace must not be empty"),
    ],
)
def test_validation_messages(spec: ProcessSpec, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_spec(spec, CAPACITY)


def test_backoff_doubles_caps_and_resets_after_a_healthy_run() -> None:
    b = Backoff(base=1, cap=10, reset_after=60)
    step, delays = 0, []
    for _ in range(6):
        delay, step = b.after_exit(step, run_seconds=1)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 10, 10]
    assert b.after_exit(step, run_seconds=61) == (1, 1)


@pytest.mark.parametrize(
    ("policy", "reason", "restart"),
    [
        (RestartPolicy.ALWAYS, Reason.COMPLETED, True),
        (RestartPolicy.ALWAYS, Reason.ERROR, True),
        (RestartPolicy.ON_FAILURE, Reason.COMPLETED, False),
        (RestartPolicy.ON_FAILURE, Reason.OOM_KILLED, True),
        (RestartPolicy.ON_FAILURE, Reason.START_ERROR, True),
        (RestartPolicy.NEVER, Reason.ERROR, False),
    ],
)
def test_restart_decisions(policy: RestartPolicy, reason: Reason, restart: bool) -> None:
    assert should_restart(policy, Termination(reason)) is restart


def test_the_fork_server_imports_only_the_standard_library() -> None:
    """It forks every shim: kept small (see runtime/shim.py), whatever its package imports."""
    code = (
        "import sys, serverlessos_agent.runtime.shim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'google', 'kubernetes', 'prometheus_client', 'serverlessos')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
