"""The prefix transaction in process: what is left after success and after failure, for a
prefix that the installer creates, one that exists empty and one that exists with files."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lockship.stub.errors import PrefixError
from lockship.stub.prefix import (
    LOCK_NAME,
    STAGE_NAME,
    NoHardLinks,
    RestoreIncomplete,
    _still_there,
    check_prefix,
    prefix_transaction,
    recover_interrupted,
)
from lockship.stub.snapshot import SNAPSHOT_NAME


class Boom(Exception):
    pass


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run(prefix: Path, *, fail: bool) -> None:
    """A transaction whose body writes a file and a staging folder, then fails if asked."""
    with prefix_transaction(prefix):
        assert (prefix / LOCK_NAME).is_file()
        (prefix / STAGE_NAME / "cache").mkdir(parents=True)
        (prefix / "new.txt").write_text("new")
        if fail:
            raise Boom


def test_created_ok(tmp_path: Path) -> None:
    run(tmp_path / "a" / "b" / "env", fail=False)
    assert listing(tmp_path) == ["a", "a/b", "a/b/env", "a/b/env/new.txt"]


def test_created_failed_removes_the_folders_it_made(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        run(tmp_path / "a" / "b" / "env", fail=True)
    assert listing(tmp_path) == []


def test_existed_empty_ok(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    run(tmp_path / "env", fail=False)
    assert listing(tmp_path) == ["env", "env/new.txt"]


def test_existed_empty_failed_empties_it_again(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    with pytest.raises(Boom):
        run(tmp_path / "env", fail=True)
    assert listing(tmp_path) == ["env"]


def test_existed_with_files_ok_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "old.txt").write_text("old")
    run(tmp_path / "env", fail=False)
    assert listing(tmp_path) == ["env", "env/new.txt", "env/old.txt"]


def test_existed_with_files_failed_is_restored(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "old.txt").write_text("old")
    with pytest.raises(Boom):
        run(tmp_path / "env", fail=True)
    assert listing(tmp_path) == ["env", "env/old.txt"]
    assert (tmp_path / "env" / "old.txt").read_text() == "old"


KILLED = """
import os, signal, sys
from pathlib import Path
from lockship.stub.prefix import prefix_transaction
prefix = Path(sys.argv[1])
with prefix_transaction(prefix, journal={"name": "app", "version": "1"}):
    (prefix / "new.txt").write_text("new")
    (prefix / "old.txt").unlink()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_transaction_killed_outright_is_recovered_by_the_next_run(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "old.txt").write_text("old")
    killed = subprocess.run([sys.executable, "-c", KILLED, prefix], check=False, timeout=60)
    assert killed.returncode == -9
    assert sorted(p.name for p in prefix.iterdir()) == [SNAPSHOT_NAME, LOCK_NAME, "new.txt"]
    assert recover_interrupted(prefix) == {
        "name": "app",
        "version": "1",
        "fresh": False,
        "keep_out": sorted([LOCK_NAME, STAGE_NAME]),
        "started": pytest.approx(time.time(), abs=60),
    }
    assert listing(prefix) == ["old.txt"]
    assert recover_interrupted(prefix) is None


def test_a_live_installers_snapshot_is_never_restored(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "old.txt").write_text("old")
    with prefix_transaction(prefix):
        (prefix / "new.txt").write_text("new")
        with pytest.raises(PrefixError, match="another installer is installing into"):
            recover_interrupted(prefix)
        assert (prefix / "new.txt").exists()


def test_a_second_transaction_on_a_locked_prefix_is_refused(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    with prefix_transaction(prefix):
        busy = f"another installer is installing into {prefix} right now; wait for it to finish"
        with (
            pytest.raises(PrefixError, match=f"^{re.escape(busy)}$"),
            prefix_transaction(prefix),
        ):
            pass
        with pytest.raises(PrefixError, match=f"^{re.escape(busy)}$"):
            check_prefix(prefix, force=True)
    assert listing(tmp_path) == ["env"]


def test_check_prefix_refusals(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrefixError, match="exists and is not empty; choose another prefix, or"):
        check_prefix(tmp_path / "full", force=False)
    check_prefix(tmp_path / "full", force=True)
    check_prefix(tmp_path / "full", force=False, update=True)
    with pytest.raises(PrefixError, match="is a file; choose a folder path"):
        check_prefix(tmp_path / "file", force=True)
    long = tmp_path / ("p" * 50)
    with pytest.raises(PrefixError, match=f"is {len(str(long))} characters long, but packages"):
        check_prefix(long, force=False, max_length=len(str(long)) - 1)
    check_prefix(long, force=False, max_length=len(str(long)))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_prefix_in_a_read_only_folder(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    with pytest.raises(PrefixError, match="no permission to write in"):
        check_prefix(parent / "env", force=False)


# --- when the rollback itself fails, and a file system without hard links ------------------


def test_a_failed_restore_releases_the_lock_keeps_the_snapshot_and_says_recover(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "old.txt").write_text("old")
    stuck = prefix / "new.txt"
    try:
        with (
            pytest.raises(RestoreIncomplete) as caught,
            prefix_transaction(prefix, installer="app.sh"),
        ):
            (prefix / "old.txt").unlink()
            stuck.write_text("new")
            # a file that cannot be removed (in use on Windows, an I/O error, here the
            # immutable flag, which binds root too): the restore cannot finish
            subprocess.run(["chattr", "+i", stuck], check=True)
            raise Boom("the update failed")
    finally:
        subprocess.run(["chattr", "-i", stuck], check=False)
    assert str(caught.value) == (
        "the update failed; restoring the previous state failed too: Operation not permitted "
        f"({stuck}), so the environment at {prefix} is half-restored; fix that, then run "
        f"`app.sh --recover -p {prefix}` to finish restoring it"
    )
    assert isinstance(caught.value.__cause__, Boom)
    assert (prefix / SNAPSHOT_NAME).is_dir()  # kept for --recover
    # the lock was released: --recover (or the next run) gets it and finishes
    assert recover_interrupted(prefix) is not None
    assert listing(prefix) == ["old.txt"]
    assert (prefix / "old.txt").read_text() == "old"


def test_without_hard_links_an_update_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "old.txt").write_text("old")

    def no_links(source: object, target: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted", str(source))

    monkeypatch.setattr(os, "link", no_links)  # what FAT, exFAT and some mounts answer
    with pytest.raises(NoHardLinks) as caught, prefix_transaction(prefix):
        pytest.fail("the body must not run")
    assert str(caught.value) == (
        f"cannot update {prefix}: updates (-u, -f) keep the previous state as hard links, and "
        f"they are refused there: Operation not permitted ({prefix / 'old.txt'}); install into "
        "a new prefix on a file system with hard links, or remove this one first"
    )
    assert listing(tmp_path) == ["env", "env/old.txt"]
    # a new or empty prefix needs no hard link: it still installs
    run(tmp_path / "fresh", fail=False)
    assert (tmp_path / "fresh" / "new.txt").exists()


KILLED_FRESH = """
import os, signal, sys
from pathlib import Path
from lockship.stub.prefix import prefix_transaction
prefix = Path(sys.argv[1])
with prefix_transaction(prefix, journal={"name": None, "version": None}):
    (prefix / "bin").mkdir()
    (prefix / "bin" / "tool").write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_first_install_killed_outright_is_emptied_by_the_next_run(tmp_path: Path) -> None:
    prefix = tmp_path / "a" / "env"
    killed = subprocess.run([sys.executable, "-c", KILLED_FRESH, prefix], check=False, timeout=60)
    assert killed.returncode == -9
    assert (prefix / "bin" / "tool").exists()
    journal = recover_interrupted(prefix)
    assert journal is not None and journal["fresh"] is True
    assert listing(prefix) == []
    check_prefix(prefix, force=False)  # an empty folder: installing into it needs no -f


def test_a_lock_file_removed_by_its_holder_cannot_be_locked_again(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    with prefix_transaction(prefix):
        # opened while held, locked after release
        late = open(prefix / LOCK_NAME, "a+b")  # noqa: SIM115 - closed below
    assert not (prefix / LOCK_NAME).exists()
    with late:
        assert not _still_there(prefix / LOCK_NAME, late)
        with prefix_transaction(prefix):  # a new lock file, locked normally
            assert _still_there(prefix / LOCK_NAME, late) is False
