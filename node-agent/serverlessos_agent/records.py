"""The agent's domain records: what a process is asked to be and what it is.
Every room speaks them (like errors.py), so they sit below all of them.

Plain dataclasses, persisted as JSON in the state dir and translated to the
gRPC messages only at the edges (convert.py).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

DEFAULT_NAMESPACE = "default"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class State(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    BACKOFF = "BackOff"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FROZEN = "Frozen"  # checkpointed for a migration; resumed or removed when it ends


class Reason(enum.StrEnum):
    """How a run ended (Termination.reason)."""

    COMPLETED = "Completed"
    ERROR = "Error"
    SIGNALED = "Signaled"
    OOM_KILLED = "OOMKilled"
    START_ERROR = "StartError"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Ref:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Resources:
    cpu_millis: int = 0  # 0 = unlimited
    memory_bytes: int = 0  # 0 = unlimited


@dataclass(frozen=True)
class Lease:
    """Resources held only until `seconds` pass without a renewal; then `fallback`
    applies (a zero field keeps the current value)."""

    seconds: float
    fallback: Resources = Resources()


class Seccomp(enum.StrEnum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"


@dataclass(frozen=True)
class Security:
    """How the process is confined (spec.securityContext); the defaults confine it."""

    run_as_user: int = 0
    run_as_group: int = 0
    supplemental_groups: tuple[int, ...] = ()
    fs_group: int | None = None
    capabilities: tuple[str, ...] = ()  # kept; all others dropped
    allow_privilege_escalation: bool = False
    seccomp: Seccomp = Seccomp.RUNTIME_DEFAULT

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Security:
        if not data:
            return cls()  # records written before confinement existed
        return cls(
            run_as_user=int(data["run_as_user"]),
            run_as_group=int(data["run_as_group"]),
            supplemental_groups=tuple(data["supplemental_groups"]),
            fs_group=data["fs_group"],
            capabilities=tuple(data["capabilities"]),
            allow_privilege_escalation=bool(data["allow_privilege_escalation"]),
            seccomp=Seccomp(data["seccomp"]),
        )


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    namespace: str = DEFAULT_NAMESPACE
    owner_uid: str = ""
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    resources: Resources = Resources()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    security: Security = Security()

    @property
    def ref(self) -> Ref:
        return Ref(self.namespace, self.name)


@dataclass
class Termination:
    reason: Reason
    exit_code: int = 0
    signal: int = 0
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    observed_after_agent_restart: bool = False


@dataclass
class Run:
    """One run of a process: the shim that waits for it and the process itself.

    Start times (clock ticks since boot, /proc/PID/stat field 22) make the PIDs
    safe against reuse when the agent re-adopts after a restart.
    """

    attempt: int
    shim_pid: int
    shim_start: int
    pid: int
    pid_start: int
    started_at: float
    oom_kills_before: int = 0


@dataclass
class ProcessRecord:
    uid: str
    spec: ProcessSpec
    state: State
    created_at: float
    cgroup: str
    log_path: str
    workdir: str
    restarts: int = 0
    # Consecutive restarts without a long enough healthy run (drives back-off).
    backoff_step: int = 0
    attempt: int = 0
    run: Run | None = None
    last_started_at: float = 0.0
    last_termination: Termination | None = None
    message: str = ""
    next_restart_at: float = 0.0
    migration_id: str = ""  # set while FROZEN for a migration, or restored by one
    lease: Lease | None = None  # spec.resources are leased; None = permanent
    # Wall clock; on disk only as of the last change (renewals are not saved): an
    # agent restart starts the lease's clock again.
    lease_expires_at: float = 0.0

    @property
    def ref(self) -> Ref:
        return self.spec.ref

    @property
    def pid(self) -> int:
        return self.run.pid if self.run else 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def redacted(self) -> ProcessRecord:
        """The record as it may be shown: environment names kept, values blanked.
        Values are the process's alone (tokens, passwords): never in a reply or in the
        event journal; only record.json (0600, in the agent's 0700 state dir) and a
        migration's checkpoint to the next node carry them."""
        env = dict.fromkeys(self.spec.env, "")
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, env=env))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        spec_data = data["spec"]
        spec = ProcessSpec(
            name=spec_data["name"],
            argv=tuple(spec_data["argv"]),
            namespace=spec_data["namespace"],
            owner_uid=spec_data["owner_uid"],
            env=dict(spec_data["env"]),
            working_dir=spec_data["working_dir"],
            resources=Resources(**spec_data["resources"]),
            restart_policy=RestartPolicy(spec_data["restart_policy"]),
            security=Security.from_json(spec_data.get("security")),
        )
        termination = data.get("last_termination")
        run = data.get("run")
        lease = data.get("lease")
        plain = {
            k: v
            for k, v in data.items()
            if k not in {"spec", "state", "last_termination", "run", "lease"}
        }
        return cls(
            **plain,
            spec=spec,
            state=State(data["state"]),
            run=Run(**run) if run else None,
            lease=(
                Lease(seconds=lease["seconds"], fallback=Resources(**lease["fallback"]))
                if lease
                else None
            ),
            last_termination=(
                Termination(**{**termination, "reason": Reason(termination["reason"])})
                if termination
                else None
            ),
        )
