"""A restorable picture of an existing prefix, taken before an update changes it.

A conda prefix cannot be built beside the old one and renamed into place: prefixes are baked
into its files. So before an update (``-u``) or a reinstall (``-f``) the installer keeps the old
state recoverable instead: a tree of hard links to every file of the prefix, inside the prefix
(``.lockship-snapshot/tree``, so on the same filesystem), plus the symlinks and folder modes.
That copies no data: a 1 GB environment's snapshot is one ``link()`` per file.

It works because nothing that changes the prefix writes into an existing file: rattler removes
a file and creates a new one (checked with py-rattler 0.28, ``tests/test_snapshot.py``), and
lockship's own files (history, marker, activation scripts) are replaced by renames. A package's
post-link script or the post-install script that appends to an existing file in place changes
the snapshot's copy too: that is the limit of this method, and it is documented.

Life cycle, each step atomic, so a kill at any moment leaves a state the next run understands:

1. the tree is built under ``.lockship-snapshot.partial`` (a leftover is simply removed: the
   prefix was not touched yet);
2. it is renamed to ``.lockship-snapshot``, with ``journal.json`` saying what was installed: from
   here on the snapshot is the journal of an update in progress;
3. the update runs;
4. on success the snapshot is renamed to ``.lockship-snapshot.discard`` and removed; on failure,
   or at the next run after a kill, :meth:`Snapshot.restore` puts every file back (idempotent:
   a kill while restoring is repaired by restoring again) and then discards it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT_NAME = ".lockship-snapshot"
_PARTIAL = SNAPSHOT_NAME + ".partial"
_DISCARD = SNAPSHOT_NAME + ".discard"
_JOURNAL = "journal.json"
_TREE = "tree"
_MODES = "modes.json"


class SnapshotError(OSError):
    """The snapshot cannot be taken or restored (a file system refuses hard links, say)."""


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot of ``prefix``: the journal of an update in progress."""

    prefix: Path
    journal: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.prefix / SNAPSHOT_NAME

    def restore(self) -> int:
        """Put the prefix back as it was when the snapshot was taken; return files changed.

        Files that still are the snapshot's (same inode) are left alone; everything the update
        added is removed; everything it replaced or removed is linked back. Then the snapshot
        is discarded.
        """
        tree = self.path / _TREE
        keep_out = set(self.journal.get("keep_out", [])) | _OWN_NAMES
        changed = _remove_added(self.prefix, tree, keep_out)
        changed += _put_back(tree, self.prefix)
        modes = json.loads((self.path / _MODES).read_text(encoding="utf-8"))
        for relative, mode in modes.items():
            folder = self.prefix / relative
            if folder.is_dir() and stat.S_IMODE(folder.lstat().st_mode) != mode:
                folder.chmod(mode)
        self.discard()
        return changed

    def discard(self) -> None:
        """Remove the snapshot: the update is final."""
        discard = self.prefix / _DISCARD
        if self.path.exists():
            shutil.rmtree(discard, ignore_errors=True)
            os.replace(self.path, discard)
        shutil.rmtree(discard, ignore_errors=True)


#: what a snapshot never holds nor restores: its own folders
_OWN_NAMES = {SNAPSHOT_NAME, _PARTIAL, _DISCARD}


def take_snapshot(
    prefix: Path, *, keep_out: Collection[str] = (), journal: dict[str, Any] | None = None
) -> Snapshot:
    """Snapshot every file, symlink and folder of ``prefix`` except the names in ``keep_out``
    (top-level entries such as the installer's lock file)."""
    clean_leftovers(prefix)
    partial = prefix / _PARTIAL
    tree = partial / _TREE
    tree.mkdir(parents=True)
    skip = set(keep_out) | _OWN_NAMES
    modes: dict[str, int] = {}
    try:
        for entry, relative in _walk(prefix, skip):
            target = tree / relative
            if entry.is_dir(follow_symlinks=False):
                target.mkdir()
                modes[relative] = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            elif entry.is_symlink():
                target.symlink_to(Path(entry.path).readlink())
            elif entry.is_file(follow_symlinks=False):
                os.link(entry.path, target, follow_symlinks=False)
            # sockets, fifos, devices: conda packages carry none; they are left where they are
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise SnapshotError(
            e.errno, f"cannot keep the previous state of {prefix}: {e.strerror or e}", e.filename
        ) from e
    record = {**(journal or {}), "keep_out": sorted(keep_out), "started": time.time()}
    (partial / _MODES).write_text(json.dumps(modes, sort_keys=True), encoding="utf-8")
    (partial / _JOURNAL).write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
    os.replace(partial, prefix / SNAPSHOT_NAME)
    return Snapshot(prefix, record)


def find_interrupted(prefix: Path) -> Snapshot | None:
    """The snapshot of an update that did not finish (the process was killed), if any."""
    journal = prefix / SNAPSHOT_NAME / _JOURNAL
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        record = {}
    return Snapshot(prefix, record if isinstance(record, dict) else {})


def clean_leftovers(prefix: Path) -> None:
    """Remove a half-built snapshot (the prefix was not touched yet) and a half-removed one."""
    for name in (_PARTIAL, _DISCARD):
        shutil.rmtree(prefix / name, ignore_errors=True)


def _walk(root: Path, skip: Collection[str], relative: str = "") -> Iterator[tuple[Any, str]]:
    """Every entry below ``root`` (folders before their contents), not following symlinks."""
    with os.scandir(root / relative if relative else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if not relative and entry.name in skip:
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            yield entry, path
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(root, skip, path)


def _remove_added(prefix: Path, tree: Path, skip: Collection[str]) -> int:
    """Remove what is in the prefix but not in the snapshot (or of another kind there)."""
    removed = 0
    for entry, relative in list(_walk(prefix, skip)):
        kept = tree / relative
        if entry.is_dir(follow_symlinks=False):
            if kept.is_dir() and not kept.is_symlink():
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        elif not (kept.exists() or kept.is_symlink()) or (kept.is_dir() and not kept.is_symlink()):
            _unlink(Path(entry.path))
            removed += 1
    return removed


def _put_back(tree: Path, prefix: Path) -> int:
    """Link every snapshot file back where it was, unless it is there already."""
    changed = 0
    for entry, relative in _walk(tree, ()):
        target = prefix / relative
        if entry.is_dir(follow_symlinks=False):
            if not target.is_dir() or target.is_symlink():
                _unlink(target)
                target.mkdir()
            continue
        if entry.is_symlink():
            link = Path(entry.path).readlink()
            if target.is_symlink() and target.readlink() == link:
                continue
            _replace(target, symlink=link)
        elif not _same_inode(entry.path, target):
            _replace(target, hardlink=entry.path)
        else:
            continue
        changed += 1
    return changed


def _replace(target: Path, *, symlink: Path | None = None, hardlink: str = "") -> None:
    """Create ``target`` anew (a symlink, or a hard link to the snapshot's file) through a
    temporary name beside it and a rename."""
    temporary = target.with_name(f".{target.name}.lockship-restore")
    _unlink(temporary)
    if symlink is not None:
        temporary.symlink_to(symlink)
    else:
        os.link(hardlink, temporary)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(temporary, target)


def _same_inode(a: str, b: Path) -> bool:
    try:
        first, second = os.lstat(a), b.lstat()
    except FileNotFoundError:
        return False
    return (first.st_ino, first.st_dev) == (second.st_ino, second.st_dev)


def _unlink(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
