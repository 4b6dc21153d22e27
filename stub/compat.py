"""Workarounds for what py-rattler, PyInstaller and tqdm do, in one place.

Each one names the version it was seen with; ``tests/test_compat.py`` has a test per workaround
that checks the behaviour is still there, so it fails (and the workaround can go) once a new
release fixes it.

- **rattler's error chains** (py-rattler 0.28): errors carry their causes as extra lines
  (``X\\nCaused by: Y``); :func:`one_line` keeps the first and the last.
- **rattler's disk errors** (py-rattler 0.28): ``package_streaming.extract`` raises an OSError
  whose errno is None and whose text ends in ``(os error 28)``; :func:`disk_error` rebuilds it.
- **CACHEDIR.TAG** (py-rattler 0.28): ``rattler.install`` tags the prefix as a cache, so backup
  tools would skip an installed environment; :func:`remove_cache_tag`.
- **tqdm's monitor thread** (tqdm 4.67): the first bar starts a thread, and the Linux installer
  forks its unpacking workers while a bar is open; :func:`without_tqdm_monitor`.
- **teardown crashes** (py-rattler 0.28): rattler's runtime threads can crash the interpreter's
  teardown (about one exit in ten under load turned into a segfault or abort instead of the exit
  code already reported), so both entry points end with ``os._exit``
  (:func:`lockship.stub.shared.boundary.end_process`). Seen under load only; no cheap
  reproduction, so no test: try removing it when py-rattler changes its runtime.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def one_line(error: Exception) -> str:
    """Shorten rattler's error chains ("X\\nCaused by: Y") to their first and last lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]}: {lines[-1].removeprefix('Caused by:').strip()}"


def disk_error(error: Exception) -> OSError | None:
    """The disk error behind a failed extraction, if that is what it was (errno restored)."""
    if not isinstance(error, OSError):
        return None
    if error.errno is not None:
        return error
    found = _OS_ERROR.search(str(error))
    if found is None:
        return None
    number = int(found[1])
    return OSError(number, os.strerror(number))


def remove_cache_tag(prefix: Path) -> None:
    """An installed environment should be backed up: drop the tag rattler leaves."""
    (prefix / "CACHEDIR.TAG").unlink(missing_ok=True)


def without_tqdm_monitor() -> None:
    """No monitor thread for tqdm's bars (set before the first bar is made)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
