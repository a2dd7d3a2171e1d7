"""The premise of live migration, checked with the real CRIU 4: a process the agent
runs (PID 1 of its own PID namespace, stdio on regular files, nothing else
inherited, in its cgroups) can be checkpointed and restored and carries on from
where it was.

Here CRIU is driven directly, by its command line, as an outside check of that
premise; the agent's own checkpoint/restore (through CRIU's RPC) is exercised
by e2e/test_migration.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb

from .conftest import AgentProcess

pytestmark = pytest.mark.timeout(120)

COUNTER = (
    "import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.1)\n"
)


def _last(log: Path) -> int:
    return int(log.read_text().split()[-1])


def test_a_managed_process_is_checkpointable_and_restorable(
    agent: AgentProcess, criu: str, tmp_path: Path
) -> None:
    p = agent.run(
        "counter", ["python3", "-c", COUNTER], memory=64 * 2**20, restart=pb.RESTART_POLICY_NEVER
    )
    log = Path(p.log_path)
    time.sleep(1.0)
    images = tmp_path / "images"
    images.mkdir()
    dump = subprocess.run(
        [criu, "dump", "-t", str(p.pid), "-D", str(images), "-o", "dump.log"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dump.returncode == 0, (images / "dump.log").read_text()[-2000:]
    at_dump = _last(log)
    assert at_dump >= 5
    done = agent.wait_for("counter", lambda q: q.state == pb.PROCESS_STATE_FAILED)
    assert done.last_termination.signal == signal.SIGKILL  # CRIU ends the dumped tree

    restore = subprocess.run(
        [
            criu,
            "restore",
            "-D",
            str(images),
            "-d",
            "-o",
            "restore.log",
            "--pidfile",
            str(tmp_path / "restored.pid"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restore.returncode == 0, (images / "restore.log").read_text()[-2000:]
    restored = int((tmp_path / "restored.pid").read_text())
    try:
        time.sleep(1.0)
        after = _last(log)
        assert after > at_dump, "it runs again"
        assert after < at_dump + 20, "from where it was, not from zero"
        nspid = next(
            line
            for line in Path(f"/proc/{restored}/status").read_text().splitlines()
            if line.startswith("NSpid:")
        ).split()
        assert nspid[-1] == "1", "still PID 1 of its own namespace"
        assert (
            f"/{agent.cgroup_root}/default/counter" in Path(f"/proc/{restored}/cgroup").read_text()
        )
    finally:
        os.kill(restored, signal.SIGKILL)
