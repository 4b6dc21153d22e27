"""Two facts about the machine the builder runs on: its platform and its cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rattler import Subdir

#: overrides the cache folder (packages, stubs, solved repodata)
CACHE_DIR_ENV = "LOCKSHIP_CACHE_DIR"


def host_platform() -> str:
    """This machine's conda platform, e.g. ``linux-64``."""
    return str(Subdir.current())


def default_cache_dir() -> Path:
    """``$LOCKSHIP_CACHE_DIR``, else the platform's user cache folder plus ``lockship``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lockship"
