"""Each migration's directory and meta.json, called directly: ids from the operator
are checked before they name a path, and received checkpoints nobody restored go."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverlessos_agent.errors import InvalidArgument
from serverlessos_agent.migration.directory import LEFTOVER_TTL, MigrationDirs


@pytest.mark.parametrize("bad", ["", "a/b", "../x", ".hidden", "."])
def test_a_migration_id_cannot_name_a_path_outside_its_directory(tmp_path: Path, bad: str) -> None:
    dirs = MigrationDirs(tmp_path / "migrations")
    with pytest.raises(InvalidArgument, match="bad migration id"):
        dirs.path(bad)
    with pytest.raises(InvalidArgument):
        dirs.read_meta(bad)


def test_fresh_meta_and_remove(tmp_path: Path) -> None:
    dirs = MigrationDirs(tmp_path / "migrations")
    directory = dirs.fresh("m1")
    (directory / "images").mkdir()
    (directory / "images" / "old.img").write_bytes(b"x")
    assert dirs.read_meta("m1") is None
    dirs.write_meta("m1", {"role": "source", "created": 1.0})
    assert dirs.read_meta("m1") == {"role": "source", "created": 1.0}
    assert list(dirs.fresh("m1").iterdir()) == [], "a retry starts from an empty directory"
    dirs.remove("m1")
    assert not directory.exists()
    dirs.remove("m1")  # idempotent


def test_only_stale_unrestored_checkpoints_are_leftovers(tmp_path: Path) -> None:
    dirs = MigrationDirs(tmp_path / "migrations")
    now = 10_000.0
    old = now - LEFTOVER_TTL - 1
    cases = {
        "received-old": {"role": "target", "state": "received", "created": old},
        "receiving-old": {"role": "target", "state": "receiving", "created": old},
        "received-new": {"role": "target", "state": "received", "created": now - 60},
        "restored-old": {"role": "target", "state": "restored", "created": old},
        "source-old": {"role": "source", "created": old},
    }
    for migration_id, meta in cases.items():
        dirs.fresh(migration_id)
        dirs.write_meta(migration_id, meta)
    dirs.remove_leftovers(now)
    assert sorted(p.name for p in dirs.root.iterdir()) == [
        "received-new",
        "restored-old",
        "source-old",
    ]


def test_every_step_of_one_migration_shares_its_lock(tmp_path: Path) -> None:
    dirs = MigrationDirs(tmp_path / "migrations")
    assert dirs.lock("m1") is dirs.lock("m1")
    assert dirs.lock("m1") is not dirs.lock("m2")
