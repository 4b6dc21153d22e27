"""A conda prefix as the install core's destination: what a failure says about what it left."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from lockship.stub.destination import FileSystemError, PrefixDestination, RolledBack

from tests.trees import tree_state


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", "somefile")


def test_a_disk_error_in_a_new_prefix_says_nothing_was_left_behind(tmp_path: Path) -> None:
    prefix = tmp_path / "parent" / "env"
    with pytest.raises(FileSystemError) as caught, PrefixDestination(prefix).transaction("app.sh"):
        (prefix / "half-written").write_text("x")
        raise full_disk()
    assert str(caught.value) == (
        "writing the environment failed: No space left on device (somefile); nothing was "
        "left behind; free some space and run the installer again"
    )
    assert not (tmp_path / "parent").exists()


def test_a_disk_error_in_a_prefix_that_held_files_restores_them(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "mine.txt").write_text("keep")
    before = tree_state(prefix)
    with pytest.raises(RolledBack) as caught, PrefixDestination(prefix).transaction("app.sh"):
        (prefix / "mine.txt").unlink()  # files are replaced, never written in place
        (prefix / "new.txt").write_text("new")
        raise full_disk()
    assert str(caught.value) == (
        "writing the environment failed: No space left on device (somefile); free some space "
        f"and run the installer again; the environment at {prefix} is unchanged"
    )
    assert tree_state(prefix) == before
