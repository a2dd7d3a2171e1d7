"""One run of a process: spawning it through the fork server, watching its shim,
and reading how it ended from the files the shim leaves (run/shim.json, run/exit.json).

What a run's start or end means for the record (states, restarts, events) is
lifecycle.py's; this module only knows the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serverlessos.files import read_json
from serverlessos.quantity import format_bytes

from ..cgroup import CgroupDriver
from ..errors import FailedPrecondition
from ..records import ProcessRecord, Reason, Ref, Run, Seccomp, Security, Termination
from ..storage.record_store import RecordStore
from .confinement import Confinement
from .process_table import Live
from .procfs import open_pidfd
from .sandbox import Layout, host_id
from .spawner import Spawner, SpawnRequest

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TMP_MAX_BYTES = 256 << 20  # a process's private /tmp, at most its memory limit


def confinement_of(security: Security) -> Confinement:
    groups = [*security.supplemental_groups]
    if security.fs_group is not None and security.fs_group not in groups:
        groups.append(security.fs_group)
    return Confinement(
        uid=security.run_as_user,
        gid=security.run_as_group,
        groups=tuple(groups),
        capabilities=security.capabilities,
        no_new_privs=not security.allow_privilege_escalation,
        seccomp=security.seccomp is Seccomp.RUNTIME_DEFAULT,
    )


def own_workdir(path: str, security: Security) -> None:
    """The private working directory belongs to the process's identity: its uid, and
    fsGroup (setgid, group-writable) if it has one. Others get nothing."""
    group = security.fs_group if security.fs_group is not None else security.run_as_group
    os.chown(path, host_id(security.run_as_user), host_id(group))
    os.chmod(path, 0o2770 if security.fs_group is not None else 0o700)


@dataclass(frozen=True)
class SandboxConfig:
    """What every process's tree holds of this node (sandbox.py)."""

    ro_paths: tuple[str, ...] = ()
    cgroup2: str = ""  # the host's cgroup2 mount, read-only at /sys/fs/cgroup


def own_tree(path: str, security: Security) -> None:
    """A working directory received from another node: all of it the process's."""
    group = security.fs_group if security.fs_group is not None else security.run_as_group
    uid, gid = host_id(security.run_as_user), host_id(group)
    for top, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(top, name), uid, gid)
    own_workdir(path, security)


class Launcher:
    def __init__(
        self,
        driver: CgroupDriver,
        spawner: Spawner,
        store: RecordStore,
        sandbox: SandboxConfig | None = None,
    ) -> None:
        self._driver = driver
        self._spawner = spawner
        self._store = store
        self._sandbox = sandbox or SandboxConfig()

    def layout(self, record: ProcessRecord) -> Layout:
        """The record's tree on this node: its mountpoints under its directory."""
        memory = record.spec.resources.memory_bytes
        return Layout.for_host(
            root=str(self._store.dir(record.ref) / "root"),
            workdir=record.workdir,
            ro_paths=self._sandbox.ro_paths,
            cgroup2=self._sandbox.cgroup2,
            tmp_bytes=min(memory, TMP_MAX_BYTES) if memory else TMP_MAX_BYTES,
        )

    def prepare_cgroup(self, record: ProcessRecord) -> None:
        # Idempotent, and done before every run: after a host reboot the records
        # survive but the (in-memory) cgroup hierarchy does not.
        self._driver.create(record.cgroup)
        self._driver.set_limits(record.cgroup, record.spec.resources)

    async def spawn(
        self, record: ProcessRecord, live: Live, restore: dict[str, Any] | None = None
    ) -> Run | Termination:
        """Start (or restore) the record's current attempt: the Run, or how its start
        failed (a failed exec is not an exception). A failed restore raises: nothing ran."""
        spec = record.spec
        self.prepare_cgroup(record)
        if not spec.working_dir:
            own_workdir(record.workdir, spec.security)
        run_dir = self._store.run_dir(spec.ref)
        for stale in ("shim.json", "exit.json"):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / stale).unlink()
        try:
            oom_before = self._driver.stats(record.cgroup).oom_kills
        except (OSError, ValueError):
            oom_before = 0
        request = SpawnRequest(
            argv=list(spec.argv),
            env={"PATH": DEFAULT_PATH, **spec.env},
            cwd=spec.working_dir or "/work",
            log=record.log_path,
            run_dir=str(run_dir),
            procs=[str(p) for p in self._driver.procs_files(record.cgroup)],
            shim_procs=[str(p) for p in self._driver.procs_files(self._driver.shim_group)],
            attempt=record.attempt,
            restore=restore,
            confinement=confinement_of(spec.security).to_wire(),
            sandbox=self.layout(record).to_wire(),
        )
        live.exited.clear()
        result = await self._spawner.spawn(request)
        if not result.ok and restore is not None:
            raise FailedPrecondition(result.error)  # the caller rolls back; nothing ran
        if not result.ok:
            now = time.time()
            return Termination(
                reason=Reason.START_ERROR,
                exit_code=127,
                message=result.error,
                started_at=now,
                finished_at=now,
            )
        return Run(
            attempt=record.attempt,
            shim_pid=result.shim_pid,
            shim_start=result.shim_start,
            pid=result.pid,
            pid_start=result.pid_start,
            started_at=result.started_at,
            oom_kills_before=oom_before,
        )

    def watch(
        self,
        record: ProcessRecord,
        live: Live,
        watch_pid: int,
        watch_start: int,
        ended: Callable[[Ref], None],
    ) -> None:
        """Learn of the run's end through a pidfd on its shim (any process can poll one):
        `ended(ref)` is called then, or at once if it has already ended."""
        assert record.run is not None
        live.pid_fd = open_pidfd(record.run.pid, record.run.pid_start)
        fd = open_pidfd(watch_pid, watch_start)
        if fd is None:  # ended between spawn and now
            ended(record.ref)
            return
        live.shim_fd = fd
        asyncio.get_running_loop().add_reader(fd, ended, record.ref)

    def termination(
        self, record: ProcessRecord, run: Run, *, observed_after_restart: bool
    ) -> Termination:
        """How the run ended, from the shim's exit.json and the cgroup's OOM counter."""
        exit_info = read_json(self._store.run_dir(record.ref) / "exit.json")
        if not exit_info or exit_info.get("attempt") != run.attempt:
            return Termination(
                reason=Reason.UNKNOWN,
                exit_code=-1,
                message="the process ended but its exit status was lost (its shim was killed)",
                started_at=run.started_at,
                finished_at=time.time(),
                observed_after_agent_restart=observed_after_restart,
            )
        code, sig = int(exit_info["exit_code"]), int(exit_info["signal"])
        try:
            oom_now = self._driver.stats(record.cgroup).oom_kills
        except (OSError, ValueError):
            oom_now = run.oom_kills_before
        if oom_now > run.oom_kills_before and (sig == signal.SIGKILL or code != 0):
            limit = record.spec.resources.memory_bytes
            reason = Reason.OOM_KILLED
            message = (
                f"killed by the kernel's OOM killer: the process needed more than its memory "
                f"limit of {format_bytes(limit)}"
                if limit
                else "killed by the kernel's OOM killer"
            )
        elif sig:
            reason = Reason.SIGNALED
            message = f"killed by signal {sig} ({signal.Signals(sig).name})"
        elif code == 0:
            reason, message = Reason.COMPLETED, "exited with code 0"
        else:
            reason, message = Reason.ERROR, f"exited with code {code}"
        if observed_after_restart:
            message += " (while the agent was not running)"
        return Termination(
            reason=reason,
            exit_code=code,
            signal=sig,
            message=message,
            started_at=run.started_at,
            finished_at=float(exit_info["finished_at"]),
            observed_after_agent_restart=observed_after_restart,
        )

    def run_from_shim(self, record: ProcessRecord) -> Run | None:
        """The current attempt's run as its shim recorded it (run/shim.json), if it started."""
        info = read_json(self._store.run_dir(record.ref) / "shim.json")
        if not info or info.get("attempt") != record.attempt:
            return None
        return Run(
            attempt=record.attempt,
            shim_pid=info["shim_pid"],
            shim_start=info["shim_start"],
            pid=info["pid"],
            pid_start=info["pid_start"],
            started_at=info["started_at"],
        )

    def signal(self, record: ProcessRecord, live: Live, sig: signal.Signals) -> None:
        if live.pid_fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(live.pid_fd, sig)
        elif sig == signal.SIGKILL:
            self._driver.kill(record.cgroup)

    async def remove_cgroup(self, group: str) -> None:
        for _ in range(50):  # dying processes leave the cgroup within milliseconds
            try:
                self._driver.remove(group)
                return
            except FailedPrecondition:
                self._driver.kill(group)
                await asyncio.sleep(0.02)
        self._driver.remove(group)
