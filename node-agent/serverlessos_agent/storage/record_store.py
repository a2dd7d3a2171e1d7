"""Process records on disk, one crash-safe file per process (serverlessos.files)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from serverlessos.files import atomic_write_json

from ..records import ProcessRecord, Ref

log = logging.getLogger(__name__)


class RecordStore:
    """One directory per process: <state>/processes/<namespace>/<name>/.

    record.json is the agent's; run/ belongs to the shim of the current run;
    logs/ holds its output; work/ is its default working directory.
    """

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "processes"
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # see prepare()

    def dir(self, ref: Ref) -> Path:
        return self.root / ref.namespace / ref.name

    def run_dir(self, ref: Ref) -> Path:
        return self.dir(ref) / "run"

    def save(self, record: ProcessRecord) -> None:
        atomic_write_json(self.dir(record.ref) / "record.json", record.to_json())

    def prepare(self, ref: Ref) -> Path:
        """The process's directory: run/ and logs/ the agent's (0700); work/ becomes the
        process's own (launcher.own_workdir). The way there is traversable (0711), not
        listable, for the process's user namespace to reach its tree."""
        directory = self.dir(ref)
        for sub in ("run", "logs", "work"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        for path in (directory.parent, directory):
            path.chmod(0o711)
        for sub in ("run", "logs"):
            (directory / sub).chmod(0o700)
        return directory

    def delete(self, ref: Ref) -> None:
        shutil.rmtree(self.dir(ref), ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir(ref).parent.rmdir()  # only if it was the namespace's last

    def load_all(self) -> list[ProcessRecord]:
        records = []
        for path in sorted(self.root.glob("*/*/record.json")):
            try:
                records.append(ProcessRecord.from_json(json.loads(path.read_bytes())))
            except (ValueError, KeyError, TypeError) as exc:
                # Never crash on one bad file; keep it for a person to look at.
                log.error("ignoring unreadable process record %s: %s", path, exc)
        return records
