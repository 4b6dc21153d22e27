"""``SHA256SUMS`` in the output folder, in the format ``sha256sum -c`` checks.

Builds that share an output folder update it one at a time (read, change, rename into place
under a lock on the folder), so none loses another's lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lockship.stub.shared.boundary import (
    SHA256SUMS,
    format_checksums,
    parse_checksums,
    write_text_atomically,
)

FILE_NAME = SHA256SUMS


def read_checksums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return parse_checksums(path.read_text(encoding="utf-8"))


def update_checksums(folder: Path, installers: Mapping[Path, str]) -> Path | None:
    """Add or replace the installers' lines (path -> sha256, hashed while they were written);
    other lines are kept. Written atomically."""
    if not installers:
        return None
    path = folder / FILE_NAME
    with _folder_locked(folder):
        sums = read_checksums(path)
        for installer, sha256 in installers.items():
            sums[installer.name] = sha256
        write_text_atomically(path, format_checksums(sums))
    return path


@contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``folder``'s ``SHA256SUMS``, waiting for it if need be: the
    folder itself on POSIX (nothing is left behind), a lock file beside it on Windows."""
    if sys.platform == "win32":
        import msvcrt

        with open(folder / f".{FILE_NAME}.lock", "a+b") as f:
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)  # tries for 10 s
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
