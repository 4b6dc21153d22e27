"""What both wings share besides the payload format: the edge of each command line (one
``ERROR:`` line, a log, an exit code, the process's end) and the one helper per file mechanism
(hashing a file, writing one atomically, the ``SHA256SUMS`` format).

The builder imports this module, ``progress``, ``payload`` and ``manifest``, and nothing else of
the installer. Library code raises; :func:`report_error` turns the exception into the one line
the user sees and writes the traceback to a log file that is created exclusively (``mkstemp``:
an unpredictable name, mode 0600, never through a planted symlink).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, NoReturn

CHUNK_SIZE = 1024 * 1024
#: the name ``lockship build`` gives the checksum file beside the installers it writes
SHA256SUMS = "SHA256SUMS"


# --- files ------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: Path, *, mode: int = 0o644) -> Iterator[Path]:
    """A new, empty temporary file beside ``path`` (for tools that want a file name), renamed
    to ``path`` when the body succeeds, removed when it fails.

    The temporary name is unpredictable and created exclusively (``mkstemp``), so concurrent
    writers never share one and a reader sees the old file or the whole new one.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        partial.chmod(mode)
        os.replace(partial, path)
    except BaseException:
        with suppress(OSError):
            partial.unlink()
        raise


@contextmanager
def atomic_write(path: Path, *, mode: int = 0o644, durable: bool = False) -> Iterator[IO[bytes]]:
    """Write ``path`` through :func:`atomic_path`; ``durable`` fsyncs before the rename."""
    with atomic_path(path, mode=mode) as partial, open(partial, "wb") as f:
        yield f
        f.flush()
        if durable:
            os.fsync(f.fileno())


def write_text_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """:func:`atomic_write` for a text file (UTF-8, ``\\n`` line ends on every OS)."""
    with atomic_write(path, mode=mode) as f:
        f.write(text.encode("utf-8"))


def parse_checksums(text: str) -> dict[str, str]:
    """file name -> sha256 from a ``SHA256SUMS`` file (``sha256sum`` format)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            sums[name.lstrip("*")] = digest.lower()
    return sums


def format_checksums(sums: Mapping[str, str]) -> str:
    """The ``SHA256SUMS`` text for ``sums``, sorted by name, checkable with ``sha256sum -c``."""
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))


# --- the edge of a command line ---------------------------------------------------------


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
    details = f" (details: {log})" if log else ""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        _print(
            f"ERROR: {error.strerror or error}{where}; check the path, its permissions and free "
            f"space{details}"
        )
        return 1
    _print(f"ERROR: unexpected failure: {error!r}{details}")
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
