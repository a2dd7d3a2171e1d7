"""Checks on a ProcessSpec before anything touches the machine.

Every message names the field, the value and what would be accepted, so the
caller (a person at the CLI, or the operator writing it into a status) can
act on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serverlessos.capabilities import number as capability_number
from serverlessos.quantity import format_bytes, format_cpu

from ..errors import InvalidArgument
from ..records import Lease, ProcessSpec, Resources, Seccomp, Security
from . import seccomp
from .sandbox import ID_RANGE

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The kernel's smallest CFS quota is 1 ms per 100 ms period.
MIN_CPU_MILLIS = 10
# Below this a process cannot even exec a dynamically linked binary.
MIN_MEMORY_BYTES = 4 * 2**20
# What exec(2) takes: each argument and each NAME=value at most MAX_ARG_STRLEN bytes
# (with its NUL), and all of them together well under the kernel's total (a quarter
# of the stack limit, 2 MiB with the usual 8 MiB), so the fork server's one message
# carrying them stays small too.
MAX_ARG_STRLEN = 128 * 1024
MAX_EXEC_BYTES = 256 * 1024
# runAsUser, runAsGroup and groups: ids inside the process's user namespace.
MAX_ID = ID_RANGE - 1
MAX_GROUPS = 64
# Leases are renewed every few seconds; an hour is already far beyond any useful one.
MAX_LEASE_SECONDS = 3600.0


@dataclass(frozen=True)
class NodeCapacity:
    cpu_millis: int
    memory_bytes: int


def check_label(kind: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{kind} must not be empty")
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not a DNS-1123 label: use at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )


def check_resources(resources: Resources, capacity: NodeCapacity) -> None:
    cpu, mem = resources.cpu_millis, resources.memory_bytes
    if cpu < 0:
        raise InvalidArgument(f"cpu limit {cpu}m is negative; use 0 for no limit")
    if 0 < cpu < MIN_CPU_MILLIS:
        raise InvalidArgument(
            f"cpu limit {cpu}m is below {MIN_CPU_MILLIS}m, the kernel's smallest CFS quota "
            "(1ms per 100ms period)"
        )
    if cpu > capacity.cpu_millis:
        raise InvalidArgument(
            f"cpu limit {format_cpu(cpu)} exceeds this node's capacity of "
            f"{format_cpu(capacity.cpu_millis)}"
        )
    if mem < 0:
        raise InvalidArgument(f"memory limit {mem} is negative; use 0 for no limit")
    if 0 < mem < MIN_MEMORY_BYTES:
        raise InvalidArgument(
            f"memory limit {mem} bytes is below the minimum of {format_bytes(MIN_MEMORY_BYTES)}"
        )
    if mem > capacity.memory_bytes:
        raise InvalidArgument(
            f"memory limit {format_bytes(mem)} exceeds this node's memory of "
            f"{format_bytes(capacity.memory_bytes)}"
        )


def check_lease(lease: Lease, capacity: NodeCapacity) -> None:
    if not 0 < lease.seconds <= MAX_LEASE_SECONDS:  # also refuses NaN
        raise InvalidArgument(
            f"lease of {lease.seconds:g}s is out of range: give more than 0 and at most "
            f"{MAX_LEASE_SECONDS:g} seconds"
        )
    try:
        check_resources(lease.fallback, capacity)
    except InvalidArgument as exc:
        raise InvalidArgument(f"lease fallback: {exc}") from None


def check_spec(spec: ProcessSpec, capacity: NodeCapacity) -> None:
    check_label("name", spec.name)
    check_label("namespace", spec.namespace)
    if not spec.argv:
        raise InvalidArgument("argv is empty: give the command to run and its arguments")
    if not spec.argv[0]:
        raise InvalidArgument("argv[0] (the command) is empty")
    if any("\0" in arg for arg in spec.argv):
        raise InvalidArgument("argv contains a NUL byte")
    for key, value in spec.env.items():
        if not _ENV_NAME.match(key):
            raise InvalidArgument(
                f"environment variable name {key!r} is invalid: use letters, digits and '_', "
                "not starting with a digit"
            )
        if "\0" in value:
            raise InvalidArgument(f"environment variable {key} contains a NUL byte")
    sizes = [len(a.encode()) + 1 for a in spec.argv]
    sizes += [len(k.encode()) + len(v.encode()) + 2 for k, v in spec.env.items()]
    if max(sizes, default=0) > MAX_ARG_STRLEN:
        raise InvalidArgument(
            f"an argument or NAME=value of the environment is {max(sizes) - 1} bytes; the kernel "
            f"takes at most {MAX_ARG_STRLEN - 1} per string"
        )
    if sum(sizes) > MAX_EXEC_BYTES:
        raise InvalidArgument(
            f"argv and environment are {sum(sizes)} bytes together; at most {MAX_EXEC_BYTES} "
            "are taken (put large data in a file)"
        )
    if spec.working_dir and not spec.working_dir.startswith("/"):
        raise InvalidArgument(f"working directory {spec.working_dir!r} must be an absolute path")
    check_resources(spec.resources, capacity)
    check_security(spec.security)


def check_security(security: Security) -> None:
    ids = {
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        **{f"supplementalGroups[{i}]": g for i, g in enumerate(security.supplemental_groups)},
    }
    if security.fs_group is not None:
        ids["fsGroup"] = security.fs_group
    for field_name, value in ids.items():
        if not 0 <= value <= MAX_ID:
            raise InvalidArgument(
                f"securityContext.{field_name} {value} is not within 0..{MAX_ID}, the ids of "
                "the process's user namespace"
            )
    if len(security.supplemental_groups) > MAX_GROUPS:
        raise InvalidArgument(
            f"securityContext.supplementalGroups has {len(security.supplemental_groups)} "
            f"groups; at most {MAX_GROUPS} are taken"
        )
    for name in security.capabilities:
        try:
            capability_number(name)
        except ValueError:
            raise InvalidArgument(
                f"securityContext.capabilities.add: {name!r} is not a Linux capability "
                "(e.g. NET_BIND_SERVICE)"
            ) from None
    if security.seccomp is Seccomp.RUNTIME_DEFAULT and not seccomp.supported():
        raise InvalidArgument(
            "securityContext.seccompProfile RuntimeDefault is defined for x86_64 nodes only; "
            "this node cannot apply it (use Unconfined, or place the process elsewhere)"
        )
