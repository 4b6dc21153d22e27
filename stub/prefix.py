"""The target prefix: checks before anything is written, a lock, and rollback on failure.

An installation either completes or leaves the machine as it found it: a prefix the installer
created is removed again (with any parent folders it created); an existing prefix (``-u``,
``-f``) is restored from its snapshot, every file as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lockship.stub.errors import PrefixError
from lockship.stub.snapshot import Snapshot, SnapshotError, find_interrupted, take_snapshot

LOCK_NAME = ".lockship.lock"
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


class RestoreIncomplete(PrefixError):
    """An update failed, and putting the previous state back failed too: the snapshot is kept
    (the lock is released) so that ``--recover``, or the next run, finishes the restore."""

    def __init__(
        self, error: BaseException, restore_error: OSError, prefix: Path, installer: str
    ) -> None:
        self.error, self.restore_error, self.prefix = error, restore_error, prefix
        self.exit_code = int(getattr(error, "exit_code", 1))  # an interruption stays one
        where = f" ({restore_error.filename})" if restore_error.filename else ""
        super().__init__(
            f"{error or type(error).__name__}; restoring the previous state failed too: "
            f"{restore_error.strerror or restore_error}{where}, so the environment at {prefix} "
            f"is half-restored; fix that, then run `{installer} --recover -p {prefix}` to "
            "finish restoring it"
        )


class NoHardLinks(PrefixError):
    """The prefix's file system refuses the hard links a snapshot is made of."""

    def __init__(self, prefix: Path, error: OSError) -> None:
        where = f" ({error.filename})" if error.filename else ""
        super().__init__(
            f"cannot update {prefix}: updates (-u, -f) keep the previous state as hard links, "
            f"and they are refused there: {os.strerror(error.errno or 0)}{where}; install into a "
            "new prefix on a file system with hard links, or remove this one first"
        )


#: what ``os.link`` fails with where hard links cannot be made (FAT/exFAT, some network and
#: FUSE mounts, another mount inside the prefix, files of another user)
_NO_LINK_ERRNOS = {errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


@contextmanager
def prefix_transaction(
    prefix: Path, *, journal: dict[str, Any] | None = None, installer: str = "the installer"
) -> Iterator[Transaction]:
    """Create (if needed) and lock the prefix; roll back if the body raises.

    Every prefix is snapshotted first (``stub.snapshot``, ``journal`` describing what it held):
    the snapshot is the journal that lets the next run finish the rollback should this
    process be killed. A prefix that held something is restored exactly as it was; one the
    body creates or fills from empty is emptied again (and removed if it was created). If the
    restore itself fails, :class:`RestoreIncomplete` says to run ``installer --recover``.
    """
    existed, created = _create(prefix)
    fresh = not existed or not _entries(prefix)
    lock_file = _lock(prefix)
    state = Transaction()
    try:
        snapshot = take_snapshot(
            prefix, keep_out=KEEP_OUT, journal={**(journal or {}), "fresh": fresh}
        )
    except SnapshotError as e:
        _release(prefix, lock_file)
        if not existed:
            _remove_created(created)
        if e.errno in _NO_LINK_ERRNOS:
            raise NoHardLinks(prefix, e) from e
        raise
    if not fresh:
        state.snapshot = snapshot
    try:
        yield state
    except BaseException as error:
        try:
            shutil.rmtree(prefix / STAGE_NAME, ignore_errors=True)
            snapshot.restore()
        except OSError as restore_error:
            _release(prefix, lock_file)
            raise RestoreIncomplete(error, restore_error, prefix, installer) from error
        state.restored = not fresh
        _release(prefix, lock_file)
        if not existed:
            _remove_created(created)
        raise
    try:
        shutil.rmtree(prefix / STAGE_NAME, ignore_errors=True)
        snapshot.discard()
    finally:
        _release(prefix, lock_file)


#: the installer's own names at the top of a prefix, never part of its snapshot
KEEP_OUT = (LOCK_NAME, STAGE_NAME)


def recover_interrupted(prefix: Path) -> dict[str, Any] | None:
    """Finish the rollback of an install or update that was killed outright (or whose restore
    failed); its journal (``fresh``: the prefix was new or empty), or None.

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
        _release(prefix, lock_file)


def _release(prefix: Path, lock_file: IO[bytes]) -> None:
    """Remove the lock file, then unlock it: removed while held, no other installer can lock a
    file that is already gone while a third one locks a new one (``_lock`` checks)."""
    if sys.platform != "win32":  # Windows cannot remove a file that is open
        with suppress(OSError):
            (prefix / LOCK_NAME).unlink(missing_ok=True)
    with suppress(OSError):
        _unlock(lock_file)
    lock_file.close()
    if sys.platform == "win32":
        with suppress(OSError):
            (prefix / LOCK_NAME).unlink(missing_ok=True)


def _lock(prefix: Path) -> IO[bytes]:
    lock_file = open(prefix / LOCK_NAME, "a+b")  # noqa: SIM115 - the caller closes it
    if not _try_lock(lock_file) or not _still_there(prefix / LOCK_NAME, lock_file):
        lock_file.close()
        raise _busy(prefix)
    return lock_file


def _still_there(path: Path, lock_file: IO[bytes]) -> bool:
    """Whether the locked file is still the one at ``path`` (not removed by its last holder
    while this process waited to open it)."""
    if sys.platform == "win32":
        return True
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(lock_file.fileno())
    return (held.st_ino, held.st_dev) == (on_disk.st_ino, on_disk.st_dev)
