"""The target prefix: checks before anything is written, a lock, and rollback on failure.

An installation either completes or leaves the machine as it found it: a prefix the installer
created is removed again (with any parent folders it created); an existing prefix (``-u``,
``-f``) is restored from its snapshot, every file as it was.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lockship.stub.errors import PrefixError
from lockship.stub.snapshot import Snapshot, find_interrupted, take_snapshot

LOCK_NAME = ".lockship.lock"
INCOMPLETE_NAME = "LOCKSHIP-INCOMPLETE.txt"
STAGE_NAME = ".lockship-stage"


def normalize_prefix(raw: str) -> Path:
    """An absolute prefix path; ``~`` expanded, both slash kinds accepted on Windows."""
    return Path(os.path.abspath(os.path.expanduser(raw)))


def _entries(path: Path) -> list[str]:
    return [n for n in os.listdir(path) if n != LOCK_NAME]


def check_prefix(
    prefix: Path, *, force: bool, update: bool = False, max_length: int | None = None
) -> None:
    """Refuse a prefix that cannot be installed into, before anything is written."""
    if max_length is not None and len(str(prefix)) > max_length:
        raise PrefixError(
            f"the prefix {prefix} is {len(str(prefix))} characters long, but packages in this "
            f"installer only allow up to {max_length}; choose a shorter prefix"
        )
    if prefix.is_file() or (prefix.exists() and not prefix.is_dir()):
        raise PrefixError(f"the prefix {prefix} is a file; choose a folder path")
    if prefix.is_dir():
        _check_not_locked(prefix)
        try:
            contents = _entries(prefix)
        except PermissionError as e:
            raise PrefixError(f"cannot read the prefix {prefix}: permission denied") from e
        if contents and not (force or update):
            raise PrefixError(
                f"the prefix {prefix} exists and is not empty; choose another prefix, "
                "or pass -f to install into it anyway"
            )
        if not os.access(prefix, os.W_OK | os.X_OK):
            raise PrefixError(f"cannot write into the prefix {prefix}: permission denied")
        return
    ancestor = _existing_ancestor(prefix)
    if not ancestor.is_dir():
        raise PrefixError(f"cannot create the prefix {prefix}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PrefixError(
            f"cannot create the prefix {prefix}: no permission to write in {ancestor}; "
            "choose a prefix in a folder you can write to"
        )


def _existing_ancestor(path: Path) -> Path:
    for candidate in path.parents:
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _check_not_locked(prefix: Path) -> None:
    lock_path = prefix / LOCK_NAME
    if not lock_path.exists():
        return
    try:
        with open(lock_path, "a+b") as f:
            if not _try_lock(f):
                raise _busy(prefix)
            _unlock(f)
    except OSError:
        return


def _busy(prefix: Path) -> PrefixError:
    return PrefixError(
        f"another installer is installing into {prefix} right now; wait for it to finish"
    )


def _try_lock(f: IO[bytes]) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(f: IO[bytes]) -> None:
    if sys.platform == "win32":
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _create(prefix: Path) -> tuple[bool, tuple[Path, ...]]:
    missing = []
    for candidate in (prefix, *prefix.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            _remove_created(tuple(created))
            raise PrefixError(f"cannot create the prefix {prefix}: {e.strerror or e}") from e
        created.append(directory)
    return (prefix not in created), tuple(created)


def _remove_created(created: tuple[Path, ...]) -> None:
    if created:
        shutil.rmtree(created[0], ignore_errors=True)


@dataclass
class Transaction:
    """What :func:`prefix_transaction` did to an existing prefix: the snapshot it took (and,
    after a failure, restored)."""

    snapshot: Snapshot | None = None
    restored: bool = False


@contextmanager
def prefix_transaction(
    prefix: Path, *, journal: dict[str, Any] | None = None
) -> Iterator[Transaction]:
    """Create (if needed) and lock the prefix; roll back if the body raises.

    A prefix the body creates or fills from empty is removed again. A prefix that held
    something is snapshotted first (``stub.snapshot``, ``journal`` describing what it held)
    and restored exactly as it was; the snapshot is the journal that lets the next run finish
    the restore should this process be killed.
    """
    existed, created = _create(prefix)
    was_empty = existed and not _entries(prefix)
    lock_file = _lock(prefix)
    state = Transaction()
    ok = False
    try:
        if existed and not was_empty:
            state.snapshot = take_snapshot(prefix, keep_out=KEEP_OUT, journal=journal)
        yield state
        ok = True
    finally:
        shutil.rmtree(prefix / STAGE_NAME, ignore_errors=True)
        if not ok and was_empty:
            _empty(prefix)
        if state.snapshot is not None:
            if ok:
                state.snapshot.discard()
            else:
                state.snapshot.restore()
                state.restored = True
        _unlock(lock_file)
        lock_file.close()
        if ok or existed:
            (prefix / LOCK_NAME).unlink(missing_ok=True)
        elif created:
            _remove_created(created)


#: the installer's own names at the top of a prefix, never part of its snapshot
KEEP_OUT = (LOCK_NAME, STAGE_NAME)


def recover_interrupted(prefix: Path) -> dict[str, Any] | None:
    """Finish the restore of an update that was killed outright; its journal, or None.

    Under the prefix's lock, so a live installer's snapshot is never taken for a dead one's.
    """
    if not prefix.is_dir() or find_interrupted(prefix) is None:
        return None
    lock_file = _lock(prefix)
    try:
        snapshot = find_interrupted(prefix)
        if snapshot is None:
            return None
        shutil.rmtree(prefix / STAGE_NAME, ignore_errors=True)
        snapshot.restore()
        return snapshot.journal
    finally:
        _unlock(lock_file)
        lock_file.close()
        (prefix / LOCK_NAME).unlink(missing_ok=True)


def _lock(prefix: Path) -> IO[bytes]:
    lock_file = open(prefix / LOCK_NAME, "a+b")  # noqa: SIM115 - the caller closes it
    if not _try_lock(lock_file):
        lock_file.close()
        raise _busy(prefix)
    return lock_file


def _empty(prefix: Path) -> None:
    for name in _entries(prefix):
        path = prefix / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
