"""A prefix's whole state, to compare before and after: every entry's kind, mode and content."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

#: folders the installer keeps beside an environment's own files while it works
TRANSIENT = (".lockship-snapshot", ".lockship.lock")


def tree_state(prefix: Path) -> dict[str, tuple[str, int, str]]:
    """relative path -> (kind, mode, sha256 or link target), the installer's own work aside."""
    state: dict[str, tuple[str, int, str]] = {}
    for path in sorted(prefix.rglob("*")):
        relative = path.relative_to(prefix).as_posix()
        if relative.split("/")[0].startswith(TRANSIENT):
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            state[relative] = ("link", 0, str(path.readlink()))
        elif path.is_dir():
            state[relative] = ("dir", mode, "")
        else:
            state[relative] = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return state
