"""CRIU on this node: which version, and which of the features migration needs.

Detected once at start and published in the node's ServerlessNode capabilities,
so the operator can choose a migration mode (post-copy needs lazy pages through
userfaultfd, pre-copy needs soft-dirty tracking), and CRIU's RPC interface
(`Swrk`) that checkpoint and restore go through: the shims restore through it
(runtime/shim.py), migration/source.py dumps through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serverlessos.criu import rpc_pb2 as rpc

from ..errors import FailedPrecondition

log = logging.getLogger(__name__)

# criu check --feature NAME: what each tells us.
FEATURES = {
    "uffd-noncoop": "lazy-pages",  # post-copy: restore first, pages streamed after
    "mem_dirty_track": "dirty-tracking",  # pre-copy: iterative dumps
}
MIN_MAJOR = 4
# Post-copy's helpers (the source's page server, the target's lazy-pages daemon)
# get this long to be ready.
LAZY_READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class CriuInfo:
    path: str
    version: str
    usable: bool  # `criu check` passed
    features: list[str] = field(default_factory=list)
    problem: str = ""


def usable_binary(criu: CriuInfo | None, node_name: str) -> str:
    """The CRIU binary a migration step runs, or FailedPrecondition saying why there is none."""
    if criu is None:
        raise FailedPrecondition(f"node {node_name} has no CRIU: it cannot migrate")
    if not criu.usable:
        raise FailedPrecondition(f"CRIU on node {node_name} is not usable: {criu.problem}")
    return criu.path


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def parse_version(text: str) -> str | None:
    match = re.search(r"Version:\s*([0-9][0-9.]*)", text)
    return match.group(1) if match else None


def unprivileged_userfaultfd(path: str = "/proc/sys/vm/unprivileged_userfaultfd") -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def detect(binary: str = "criu") -> CriuInfo | None:
    """None when there is no criu at all; otherwise what it can do here."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        version_out = _run([path, "--version"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CriuInfo(path, "", False, problem=f"cannot run {path}: {exc}")
    version = parse_version(version_out.stdout + version_out.stderr) or ""
    if not version:
        return CriuInfo(path, "", False, problem=f"{path} --version printed no version")
    if int(version.split(".")[0]) < MIN_MAJOR:
        return CriuInfo(
            path,
            version,
            False,
            problem=f"CRIU {version} is too old: {MIN_MAJOR}.0 or newer is needed",
        )
    check = _run([path, "check"])
    usable = check.returncode == 0
    features = [
        name
        for feature, name in FEATURES.items()
        if _run([path, "check", "--feature", feature]).returncode == 0
    ]
    if "lazy-pages" in features and not unprivileged_userfaultfd():
        # Confined processes are restored in their own user namespace, where CRIU's
        # restorer opens userfaultfd unprivileged: without this, post-copy fails.
        log.warning(
            "vm.unprivileged_userfaultfd is not 1: post-copy (lazy pages) is off on this "
            "node (hack/install-criu.sh sets it)"
        )
        features.remove("lazy-pages")
    problem = ""
    if not usable:
        lines = (check.stderr or check.stdout).strip().splitlines()
        problem = lines[-1] if lines else f"criu check exited {check.returncode}"
    return CriuInfo(path, version, usable, features, problem)


# ----- CRIU's RPC interface (`criu swrk`) -----------------------------------


class CriuError(FailedPrecondition):
    """CRIU refused or failed; the message carries CRIU's own reason."""


Notify = Callable[[str, int], None]  # script name ("pre-dump", "post-resume", ...), pid


def log_tail(path: Path, lines: int = 6) -> str:
    """CRIU's reason for a failure: the last error lines of its log."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line or "error" in line.lower()]
    picked = (errors or text)[-lines:]
    # "(00.012345) Error (criu/files-reg.c:2003): ..." -> the message after the location.
    return "; ".join(re.sub(r"^\([0-9. ]+\)\s*", "", line).strip() for line in picked)


class Swrk:
    """One `criu swrk` child speaking protobuf over a SOCK_SEQPACKET socketpair.

    Requests are answered in order; with notify_scripts on, CRIU interleaves
    NOTIFY responses (its hook points), each acknowledged before it goes on.
    Fds named in requests (images dir, status fd) CRIU opens through
    /proc/<our pid>/fd/N; a page-server socket it must hold itself (`inherit`).
    """

    def __init__(
        self,
        binary: str,
        inherit: tuple[int, ...] = (),
        preexec: Callable[[], None] | None = None,
    ) -> None:
        """`inherit`: fds CRIU gets as its own, same numbers (a page-server socket, a
        restored process's stdio); `preexec`: run in CRIU's process before it starts
        (a restore's private mounts). Only from a single-threaded caller with preexec."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self.proc = subprocess.Popen(
            [binary, "swrk", str(theirs.fileno())],
            pass_fds=[theirs.fileno(), *inherit],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec,  # noqa: PLW1509 (callers with preexec: the single-threaded shim)
        )
        theirs.close()

    def call(self, request: rpc.Request, on_notify: Notify | None = None) -> rpc.Response:
        self._sock.send(request.SerializeToString())
        while True:
            data = self._sock.recv(1 << 20)
            if not data:
                code = self.proc.wait()
                raise CriuError(f"criu exited ({code}) before answering")
            response = rpc.Response.FromString(data)
            if response.type != rpc.NOTIFY:
                return response
            if on_notify is not None:
                on_notify(response.notify.script, response.notify.pid)
            self._sock.send(rpc.Request(type=rpc.NOTIFY, notify_success=True).SerializeToString())

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def close(self) -> None:
        self._sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def checked(response: rpc.Response, what: str, log_file: Path) -> rpc.Response:
    """The response if it succeeded; else CriuError with CRIU's reason."""
    if response.success:
        return response
    reason = response.cr_errmsg or log_tail(log_file) or os.strerror(response.cr_errno or 0)
    raise CriuError(f"CRIU {what} failed: {reason}")
