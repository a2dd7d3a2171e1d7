"""CRIU on this node: which version, and which of the features migration needs.

Detected once at start and published in the node's ServerlessNode capabilities,
so the operator can choose a migration mode (post-copy needs lazy pages through
userfaultfd, pre-copy needs soft-dirty tracking). Checkpoint and restore build
on this in the live-migration work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

# criu check --feature NAME: what each tells us.
FEATURES = {
    "uffd-noncoop": "lazy-pages",  # post-copy: restore first, pages streamed after
    "mem_dirty_track": "dirty-tracking",  # pre-copy: iterative dumps
}
MIN_MAJOR = 4


@dataclass(frozen=True)
class CriuInfo:
    path: str
    version: str
    usable: bool  # `criu check` passed
    features: list[str] = field(default_factory=list)
    problem: str = ""


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def parse_version(text: str) -> str | None:
    match = re.search(r"Version:\s*([0-9][0-9.]*)", text)
    return match.group(1) if match else None


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
    problem = ""
    if not usable:
        lines = (check.stderr or check.stdout).strip().splitlines()
        problem = lines[-1] if lines else f"criu check exited {check.returncode}"
    return CriuInfo(path, version, usable, features, problem)
