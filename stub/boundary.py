"""What both command lines do at their edge: one ``ERROR:`` line, a log, an exit code.

The builder's CLI imports this module (and ``progress``, ``payload``, ``manifest``) and nothing
else of the installer. Library code raises; :func:`report_error` turns the exception into the
one line the user sees and writes the traceback to a log file that is created exclusively
(``mkstemp``: an unpredictable name, mode 0600, never through a planted symlink).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn


def write_log(
    program: str, error: BaseException, *, header: str, folder: str | None = None
) -> Path | None:
    """Write ``error``'s traceback to a new log file; None if no log can be written."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(program).name.replace(" ", "_")
    try:
        fd, path = tempfile.mkstemp(
            prefix=f"lockship-{name}-{stamp}-", suffix=".log", dir=folder or tempfile.gettempdir()
        )
        with open(fd, "w", encoding="utf-8") as f:
            f.write(f"{header}, argv={sys.argv!r}\n")
            f.write(json.dumps({"error": str(error), "type": type(error).__name__}) + "\n")
            traceback.print_exception(error, file=f)
    except OSError:
        return None
    return Path(path)


def report_error(
    error: BaseException,
    *,
    program: str,
    header: str,
    known: Sequence[type[BaseException]],
    log_dir: str | None = None,
) -> int:
    """Print the one ``ERROR:`` line for ``error`` and return the exit code.

    ``known`` errors carry their message and ``exit_code`` (2, a usage error, gets no log);
    an OSError names its file; anything else is a bug, reported as such.
    """
    if isinstance(error, tuple(known)):
        code = int(getattr(error, "exit_code", 1))
        log = write_log(program, error, header=header, folder=log_dir) if code != 2 else None
        _print(f"ERROR: {error}" + (f" (details: {log})" if log else ""))
        return code
    log = write_log(program, error, header=header, folder=log_dir)
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        _print(
            f"ERROR: {error.strerror or error}{where}; check the path, its permissions and free "
            f"space (details: {log})"
        )
        return 1
    _print(f"ERROR: unexpected failure: {error!r} (details: {log})")
    return 1


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def end_process(code: int) -> NoReturn:
    """End the process with ``code``, skipping the interpreter's teardown.

    rattler's runtime threads can crash that teardown (see ``stub.compat``), so the console is
    flushed and the process ends here with ``os._exit``. Both entry points end this way.
    """
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)
