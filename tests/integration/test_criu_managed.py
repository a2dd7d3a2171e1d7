"""The premise of live migration, checked with the real CRIU 4: a process the agent
runs, confined (PID 1 of its own PID namespace, in its own user and mount namespaces
rooted in its tree, no capability, stdio on files outside its tree, in its cgroups),
can be checkpointed and restored and carries on from where it was, still confined.

Here CRIU is driven directly, by its command line, with the options the agent gives it
over RPC (runtime/sandbox.py: the tree's binds as external mounts, the stdio as external
files; the restore's mounts staged in a private mount namespace), as an outside check of
that recipe; the agent's own checkpoint/restore is exercised by
test_agent_migration_tls.py and e2e/test_migration.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos_agent.runtime.sandbox import (
    HOST_ID_BASE,
    STAGED_ROOT,
    Layout,
    cgroup2_mount,
    stage_for_restore,
    stdio_keys,
)

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
    layout = Layout.for_host(
        root=str(Path(p.log_path).parents[1] / "root"),
        workdir=str(Path(p.log_path).parents[1] / "work"),
        ro_paths=(),
        cgroup2=cgroup2_mount(),
        tmp_bytes=64 << 20,
    )
    stdio = stdio_keys(p.pid)
    assert sorted(stdio) == [0, 1, 2], "its stdio lies outside its tree"
    externals = [*layout.dump_externals(), *sorted(set(stdio.values()))]
    dump = subprocess.run(
        [criu, "dump", "-t", str(p.pid), "-D", str(images), "-o", "dump.log"]
        + [f"--external={e}" for e in externals],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dump.returncode == 0, (images / "dump.log").read_text()[-2000:]
    at_dump = _last(log)
    assert at_dump >= 5
    done = agent.wait_for("counter", lambda q: q.state == pb.PROCESS_STATE_FAILED)
    assert done.last_termination.signal == signal.SIGKILL  # CRIU ends the dumped tree

    null = os.open("/dev/null", os.O_RDWR)
    out = os.open(p.log_path, os.O_WRONLY | os.O_APPEND)
    # The staged mounts cover /tmp in CRIU's namespace: the images by an fd, as the agent.
    images_fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY)
    fds = {stdio[0]: null, stdio[1]: out}
    restore = subprocess.run(
        [
            criu,
            "restore",
            "-D",
            f"/proc/self/fd/{images_fd}",
            "-d",
            "-o",
            "restore.log",
            "--pidfile",
            "restored.pid",
            f"--root={STAGED_ROOT}",
            # As the agent: its shim joins the process's cgroups first (the agent removed
            # them here when the dumped process ended; this check is about the sandbox).
            "--manage-cgroups=ignore",
        ]
        + [f"--external={e}" for e in layout.restore_externals()]
        + [f"--inherit-fd=fd[{fd}]:{key}" for key, fd in fds.items()],
        capture_output=True,
        text=True,
        check=False,
        pass_fds=[*fds.values(), images_fd],
        preexec_fn=lambda: stage_for_restore(layout),
    )
    for fd in (null, out, images_fd):
        os.close(fd)
    assert restore.returncode == 0, (images / "restore.log").read_text()[-2000:]
    restored = int((images / "restored.pid").read_text())
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
        status = Path(f"/proc/{restored}/status").read_text()
        assert f"Uid:\t{HOST_ID_BASE}\t" in status, "root inside, an unprivileged uid outside"
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
    finally:
        os.kill(restored, signal.SIGKILL)
