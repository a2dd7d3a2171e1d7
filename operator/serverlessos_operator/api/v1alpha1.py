"""serverlessos.io/v1alpha1: ServerlessProcess, ServerlessNode, ProcessMigration, ClusterCgroup.

The one definition of each kind: `make crds` generates the CRDs from these models, and
the operator parses every object it reads into them (defaults live here, once).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, JsonValue, WithJsonSchema, model_validator
from pydantic.config import JsonDict
from serverlessos import capabilities
from serverlessos.quantity import Quantity

from .meta import (
    CONDITIONS,
    QUANTITY_SERIALIZER,
    QUANTITY_VALIDATOR,
    REPORTED_QUANTITY_VALIDATOR,
    Condition,
    Model,
    ObjectMeta,
    quantity_schema,
)

Cpu = Annotated[
    Quantity,
    QUANTITY_VALIDATOR,
    QUANTITY_SERIALIZER,
    WithJsonSchema(quantity_schema("CPU", "500m or 2", "10m")),
]
Memory = Annotated[
    Quantity,
    QUANTITY_VALIDATOR,
    QUANTITY_SERIALIZER,
    WithJsonSchema(quantity_schema("Memory", "256Mi or 1Gi", "4Mi")),
]

# A quantity in a status, written by the agents or the operator (e.g. "1500m", "8Gi").
Amount = Annotated[
    Quantity,
    REPORTED_QUANTITY_VALIDATOR,
    QUANTITY_SERIALIZER,
    WithJsonSchema({"type": "string"}),
]
ZERO = Quantity.parse("0")


class ProcessPhase(enum.StrEnum):
    PENDING = "Pending"
    UNSCHEDULABLE = "Unschedulable"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (ProcessPhase.SUCCEEDED, ProcessPhase.FAILED)

    @property
    def waiting(self) -> bool:
        """Not started yet (or its start not confirmed): the operator keeps trying."""
        return self in (ProcessPhase.PENDING, ProcessPhase.UNSCHEDULABLE, ProcessPhase.SCHEDULED)


class RestartPolicy(enum.StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class MigrationPolicy(enum.StrEnum):
    NEVER = "Never"
    MANUAL = "Manual"
    AUTO = "Auto"


class MigrationMode(enum.StrEnum):
    AUTO = "Auto"
    STOP_AND_COPY = "StopAndCopy"
    PRE_COPY = "PreCopy"
    POST_COPY = "PostCopy"


class MigrationPhase(enum.StrEnum):
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    CHECKPOINTING = "Checkpointing"
    TRANSFERRING = "Transferring"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"

    @property
    def terminal(self) -> bool:
        return self in (MigrationPhase.SUCCEEDED, MigrationPhase.FAILED, MigrationPhase.ROLLED_BACK)


DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


# What exec(2) takes, in characters (the API server counts characters; the agent and
# the kernel count bytes, at most 4 per character): each argument or NAME=value under
# 128 KiB, all of them together under the agent's 256 KiB.
MAX_STRING = 32000
MAX_EXEC_CHARS = 64000
STRING_ITEMS: JsonDict = {"type": "string", "maxLength": MAX_STRING}
EXEC_SIZE_RULE = (
    "self.command.map(c, size(c)).sum()"
    " + (has(self.args) ? self.args.map(a, size(a)).sum() : 0)"
    " + (has(self.env) ? self.env.map(e, size(e.name)"
    " + (has(e.value) ? size(e.value) : 0)).sum() : 0)"
    f" <= {MAX_EXEC_CHARS}"
)
EXEC_SIZE_MESSAGE = (
    f"command, args and env together must stay within {MAX_EXEC_CHARS} characters (what "
    "a process can be started with); put large data in a file"
)


class KeySelector(Model):
    """One key of a Secret or ConfigMap in the process's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_NAME)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool = Field(
        default=False, description="If it is missing, leave the variable out instead of waiting."
    )


class EnvVarSource(Model):
    """Where a variable's value comes from, as a Pod's valueFrom (one of the two)."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "message": "give exactly one of secretKeyRef and configMapKeyRef",
                }
            ]
        }
    }

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None


class EnvVar(Model):
    """A variable: a literal value, or one read from a Secret or ConfigMap when the
    process starts (the value never appears in its status, Events or the agent's
    replies)."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                    "message": "a variable takes a value or valueFrom, not both",
                }
            ]
        }
    }

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    value: str = Field(default="", max_length=MAX_STRING)
    value_from: EnvVarSource | None = None


class Resources(Model):
    """The process's CPU and memory: what placement reserves and the cgroup enforces."""

    cpu: Cpu = Field(default=Quantity.parse("100m"))
    memory: Memory = Field(default=Quantity.parse("128Mi"))


class Toleration(Model):
    """As a Pod's; a rule spanning fields is checked by the API server (CEL)."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.operator != 'Exists' || self.value == ''",
                    "message": "a toleration with operator Exists must not have a value",
                },
                {
                    "rule": "self.key != '' || self.operator == 'Exists'",
                    "message": "a toleration with an empty key must use operator Exists",
                },
            ]
        }
    }

    key: str = Field(default="", max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = Field(default="", max_length=63)
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


# A running process cannot change what it runs: the API server refuses such an
# update (a CEL transition rule) instead of the operator silently ignoring it.
# Resources can change: the operator applies them live.
IMMUTABLE: JsonDict = {
    "x-kubernetes-validations": [
        {
            "rule": "self == oldSelf",
            "message": "is immutable: delete and re-create the ServerlessProcess "
            "(only resources can change while it runs)",
        }
    ]
}


STRING_ITEMS_4K: JsonDict = {"type": "string", "minLength": 1, "maxLength": 4096}


# runAsUser, runAsGroup, groups: ids inside the process's user namespace, whose 65536
# ids are unprivileged ones of the node (the agent's runtime/sandbox.py).
MAX_ID = 65535
ID_ITEMS: JsonDict = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_ID}
CAPABILITY_NAMES: list[JsonValue] = list(capabilities.NAMES)


class LinuxCapabilities(Model):
    """Every capability is dropped; `add` keeps the named ones (as a Pod's, but from
    nothing: `drop: [ALL]` is what always happens, and is accepted as such)."""

    add: list[str] = Field(
        default_factory=list,
        max_length=len(capabilities.NAMES),
        json_schema_extra={"items": {"type": "string", "enum": CAPABILITY_NAMES}},
    )
    drop: list[Literal["ALL"]] = Field(
        default_factory=list, max_length=1, description="Only ALL, which is the default."
    )


class SeccompProfileType(enum.StrEnum):
    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"


class SeccompProfile(Model):
    type: SeccompProfileType = Field(
        default=SeccompProfileType.RUNTIME_DEFAULT,
        description="RuntimeDefault: the agent's filter (mounts, namespaces, modules, "
        "keyrings, bpf, perf, userfaultfd, other processes' memory, clocks are refused).",
    )


class SecurityContext(Model):
    """Who the process is and what it may do, with a Pod's securityContext names. By
    default it runs as uid 0 without any capability, with no_new_privs and the
    RuntimeDefault seccomp profile, in a mount namespace of its own."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.runAsNonRoot) || !self.runAsNonRoot || "
                    "(has(self.runAsUser) && self.runAsUser != 0)",
                    "message": "runAsNonRoot needs a runAsUser other than 0",
                }
            ]
        }
    }

    run_as_user: int | None = Field(default=None, ge=0, le=MAX_ID)
    run_as_group: int | None = Field(default=None, ge=0, le=MAX_ID)
    run_as_non_root: bool | None = None
    supplemental_groups: list[int] = Field(
        default_factory=list, max_length=64, json_schema_extra={"items": ID_ITEMS}
    )
    fs_group: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="Owns the process's working directory (setgid) and is one of its groups.",
    )
    capabilities: LinuxCapabilities = Field(default_factory=LinuxCapabilities)
    allow_privilege_escalation: bool = Field(
        default=False, description="false: no_new_privs (setuid binaries gain nothing)."
    )
    seccomp_profile: SeccompProfile = Field(default_factory=SeccompProfile)

    @model_validator(mode="after")
    def _non_root(self) -> SecurityContext:
        """The CRD's rule, for objects stored before it existed."""
        if self.run_as_non_root and not self.run_as_user:
            raise ValueError("runAsNonRoot needs a runAsUser other than 0")
        return self


class MigrationSettings(Model):
    """How this process may be moved between nodes (live migration)."""

    policy: MigrationPolicy = Field(
        default=MigrationPolicy.MANUAL,
        description="Never: refuse migrations. Manual: only ProcessMigrations a person "
        "creates. Auto: the platform may also move it to relieve a pressed node.",
    )
    mode: MigrationMode = Field(
        default=MigrationMode.AUTO,
        description="The mode a migration uses when its own mode is Auto.",
    )
    max_downtime: str = Field(
        default="",
        max_length=32,
        pattern=r"^$|" + DURATION,
        description="e.g. 500ms or 2s. A migration whose measured downtime exceeds it is "
        "reported with a DowntimeExceeded warning; empty = no bound.",
    )


class ServerlessProcessSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [{"rule": EXEC_SIZE_RULE, "message": EXEC_SIZE_MESSAGE}]
        }
    }

    command: list[str] = Field(
        min_length=1,
        max_length=64,
        description="The executable and its first arguments (like a container's command).",
        json_schema_extra={"items": STRING_ITEMS_4K, **IMMUTABLE},
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=1024,
        json_schema_extra={"items": STRING_ITEMS, **IMMUTABLE},
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=256, json_schema_extra=IMMUTABLE)
    working_dir: str | None = Field(
        default=None,
        max_length=4096,
        pattern=r"^/",
        description="Absolute path; default: a private scratch directory on the node.",
        json_schema_extra=IMMUTABLE,
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Changes are applied to the running process (its cgroup) at once.",
        json_schema_extra={"default": {}},  # so the API server fills it
    )
    restart_policy: RestartPolicy = Field(default=RestartPolicy.ALWAYS, json_schema_extra=IMMUTABLE)
    node_selector: dict[str, str] = Field(default_factory=dict, json_schema_extra=IMMUTABLE)
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, json_schema_extra=IMMUTABLE
    )
    migration: MigrationSettings = Field(
        default_factory=MigrationSettings,
        json_schema_extra={"default": {}},
    )
    cluster_cgroup: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_NAME,
        description="A ClusterCgroup in this namespace whose budget this process shares, "
        "wherever it runs (a ClusterCgroup's selector can also pick it; this name wins).",
        json_schema_extra=IMMUTABLE,
    )
    security_context: SecurityContext = Field(
        default_factory=SecurityContext,
        json_schema_extra={"default": {}, **IMMUTABLE},
    )

    @model_validator(mode="after")
    def _fits_exec(self) -> ServerlessProcessSpec:
        """The CRD's EXEC_SIZE_RULE, for objects stored before it existed."""
        chars = (
            sum(map(len, self.command))
            + sum(map(len, self.args))
            + sum(len(e.name) + len(e.value) for e in self.env)
        )
        if chars > MAX_EXEC_CHARS:
            raise ValueError(f"{EXEC_SIZE_MESSAGE} (it has {chars})")
        return self


class Usage(Model):
    cpu: Amount | None = None
    memory: Amount | None = None


class MigrationRecord(Model):
    """One past migration of the process, as its ProcessMigration ended."""

    name: str
    mode: str = ""
    phase: MigrationPhase
    source_node: str = ""
    target_node: str = ""
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    downtime: str = ""
    transferred_bytes: int = 0
    message: str = ""


class ServerlessProcessStatus(Model):
    phase: ProcessPhase | None = None
    node: str | None = None
    pid: int | None = None
    process_uid: str | None = Field(default=None, description="The agent's id for this process.")
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    restarts: int = 0
    usage: Usage | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS)
    observed_generation: int | None = None
    migrations: list[MigrationRecord] = Field(
        default_factory=list, max_length=10, description="The last 10 migrations, oldest first."
    )


class ServerlessProcess(Model):
    """A Linux process the platform places on a node, limits and keeps running."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ServerlessProcessSpec
    status: ServerlessProcessStatus | None = None


class Capacity(Model):
    cpu: Amount = ZERO
    memory: Amount = ZERO


class Criu(Model):
    """CRIU on the node, as its agent detected it (absent: no CRIU)."""

    version: str = ""
    usable: bool = False
    features: list[str] = Field(
        default_factory=list, description="lazy-pages (post-copy), dirty-tracking (pre-copy)"
    )
    problem: str = ""


class Capabilities(Model):
    cgroup_version: str = ""
    pid_namespaces: bool = False
    criu: Criu | None = None


class Pressure(Model):
    """PSI averages (percent of wall time stalled, as in /proc/pressure) and headroom."""

    cpu_some_avg10: float = 0.0
    memory_some_avg10: float = 0.0
    io_some_avg10: float = 0.0
    cpu_free: str = Field(default="", description="Capacity minus cpuUsed, e.g. 500m.")
    memory_free: str = Field(default="", description="Capacity minus memoryUsed, e.g. 512Mi.")
    cpu_used: str = Field(
        default="",
        description="CPU busy over the agent's last sampling interval, e.g. 1500m: the whole "
        "machine's, or with the agent's --node-cgroup that cgroup subtree's (processes "
        "outside the platform in it included). PSI follows --node-cgroup only on cgroup v2.",
    )
    memory_used: str = Field(
        default="",
        description="Memory in use, e.g. 512Mi: MemTotal - MemAvailable, or the node "
        "cgroup's usage minus inactive page cache.",
    )
    network_bytes_per_second: int = Field(
        default=0,
        description="Bytes received plus sent per second over the last sampling interval "
        "(not loopback nor container plumbing such as veths and bridges).",
    )
    network_capacity_bytes_per_second: int = Field(
        default=0,
        description="Sum of the counted interfaces' link speeds, bytes per second; 0 = unknown.",
    )
    sampled_at: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the agent took the sample these figures come from.",
    )


class ServerlessNodeStatus(Model):
    endpoint: str = ""
    agent_version: str = ""
    capabilities: Capabilities | None = None
    capacity: Capacity | None = None
    allocatable: Capacity | None = None
    pressure: Pressure | None = None
    processes: int = 0
    last_heartbeat: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS)


class ServerlessNodeSpec(Model):
    """Empty: a ServerlessNode is written by its node's agent; all it says is status."""


class ServerlessNode(Model):
    """One node's agent: where to reach it, what it can do, how pressed it is."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ServerlessNodeSpec = Field(default_factory=ServerlessNodeSpec)
    status: ServerlessNodeStatus | None = None


class ProcessMigrationSpec(Model):
    """Move one running process to another node, keeping its state (CRIU)."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "is immutable: create a new migration"}
            ]
        }
    }

    process: str = Field(
        min_length=1,
        max_length=253,
        description="The ServerlessProcess to move, in this namespace.",
    )
    target_node: str = Field(
        default="",
        max_length=253,
        description="Where to; empty = placement picks a node other than the current one.",
    )
    mode: MigrationMode = Field(
        default=MigrationMode.AUTO,
        description="Auto: post-copy where the target has lazy pages, pre-copy where both "
        "nodes track dirty pages, else stop-and-copy.",
    )


class ProcessMigrationStatus(Model):
    phase: MigrationPhase | None = None
    mode: str = Field(default="", description="The mode used (Auto resolved).")
    source_node: str = ""
    target_node: str = ""
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    completed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    frozen_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    downtime: str = Field(
        default="", description="From freezing on the source to running on the target."
    )
    downtime_seconds: float | None = None
    transferred_bytes: int = 0
    pre_copy_iterations: int = 0
    process_uid: str = ""
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS)


class ProcessMigration(Model):
    """One move of a ServerlessProcess from its node to another, like a KubeVirt
    VirtualMachineInstanceMigration: the source keeps running until the target has
    confirmed, and any failure before that leaves it running where it was."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ProcessMigrationSpec
    status: ProcessMigrationStatus | None = None


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list, max_length=256)

    def holds(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not (present and labels[self.key] in self.values)
        if self.operator == "Exists":
            return present
        return not present  # DoesNotExist


class LabelSelector(Model):
    """As metav1.LabelSelector: all of matchLabels and matchExpressions must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=64)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """As the API server matches: every matchLabel and matchExpression holds. An
        empty selector matches nothing here (a budget must name what it covers)."""
        if not self.match_labels and not self.match_expressions:
            return False
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(e.holds(labels) for e in self.match_expressions)


class ClusterCgroupSpec(Model):
    selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Which ServerlessProcesses of this namespace are members (besides those "
        "naming this ClusterCgroup in spec.clusterCgroup); empty selects none.",
        json_schema_extra={"default": {}},
    )
    cpu: Cpu = Field(
        description="The CPU budget of all members together, on whatever nodes they run: "
        "split among them every interval by demand, max-min fairly."
    )
    memory: Memory | None = Field(
        default=None,
        description="The memory budget: the members' memory limits (spec.resources.memory) "
        "together stay within it; a process that would exceed it stays Pending. "
        "Empty = no memory budget.",
    )


class ClusterCgroupMember(Model):
    name: str
    node: str = ""
    phase: str = ""
    cpu: str = Field(default="", description="Its current CPU share (its cgroup's limit).")
    memory: str = Field(default="", description="Its memory limit.")
    cpu_usage: str = ""


class NodeShare(Model):
    """What the members on one node hold together."""

    node: str
    members: int = 0
    cpu: str = ""
    memory: str = ""


class ClusterCgroupStatus(Model):
    members: list[ClusterCgroupMember] = Field(default_factory=list)
    nodes: list[NodeShare] = Field(default_factory=list, description="Per-node shares.")
    usage: Usage | None = Field(default=None, description="All members together.")
    member_count: int = 0
    waiting: list[str] = Field(
        default_factory=list, description="Processes kept Pending: they would exceed the budget."
    )
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS)
    observed_generation: int | None = None


class ClusterCgroup(Model):
    """A tenant's CPU and memory budget that holds across nodes: a cgroup spanning the
    cluster. Its members' per-node cgroup limits are set from it every interval."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ClusterCgroupSpec
    status: ClusterCgroupStatus | None = None
