"""Unpack the installer's archives in worker processes, verified, into a package cache.

rattler installs ``file://`` archives without checking their sha256, so the installer must
check them; and rattler's extraction hashes every byte it reads anyway. On Linux the installer
therefore lets worker processes do both in one pass: a worker copies one archive out of the
installer (``copy_file_range``: the bytes never pass through Python), unpacks it with
``rattler.package_streaming.extract`` into a package cache folder, and returns the sha256 that
extraction computed. The parent compares it with the payload index and stops at the first
mismatch, before anything is linked. ``rattler.install`` then links from that folder (a package
cache layer, :func:`layer_cache`) instead of unpacking every archive a second time.

Processes, not threads: py-rattler's ``extract`` holds the GIL, so threads would unpack one
archive at a time. The workers are forked before any other thread of the installer starts, so
they start in milliseconds with rattler already imported. ``fork`` is only safe to rely on on
Linux; elsewhere :func:`worker_count` is 0 and rattler unpacks the verified copies itself.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from rattler.package_cache import PackageCache, ValidationMode
from rattler.package_streaming import extract

from stub.errors import InstallError
from stub.payload import Entry, EntryChecksumMismatch, PayloadError, file_sha256

#: ``LOCKSHIP_UNPACK_WORKERS=N`` sets the number of worker processes; 0 lets rattler unpack
WORKERS_ENV = "LOCKSHIP_UNPACK_WORKERS"
MAX_WORKERS = 8


class WorkersUnavailable(InstallError):
    """No worker processes here (no writable /dev/shm for their locks, fork refused ...)."""


@dataclass(frozen=True)
class UnpackJob:
    """Copy ``entry`` out of ``installer`` into ``archive``, then unpack it into ``folder``."""

    installer: Path
    entry: Entry
    archive: Path
    folder: Path


def worker_count() -> int:
    """How many worker processes unpack archives (0: let rattler unpack them)."""
    configured = os.environ.get(WORKERS_ENV)
    if configured is not None:
        try:
            count = int(configured)
        except ValueError:
            count = -1
        if not 0 <= count <= 64:
            raise InstallError(f"{WORKERS_ENV} must be a number from 0 to 64, not {configured!r}")
        return count if sys.platform.startswith("linux") else 0
    if not sys.platform.startswith("linux"):
        return 0
    return min(os.cpu_count() or 1, MAX_WORKERS)


def unpack_archives(
    jobs: Sequence[UnpackJob], workers: int, advance: Callable[[int], None]
) -> None:
    """Run ``jobs`` in ``workers`` forked processes; raise on the first failure or mismatch.

    After a failure (or a signal) the archives still being unpacked are finished, the others are
    dropped; a worker that dies (killed for lack of memory, say) fails the install. Raises
    :class:`WorkersUnavailable`, having written nothing, when no worker can be started.
    """
    ordered = sorted(jobs, key=lambda job: job.entry.size, reverse=True)  # big ones first
    try:
        pool = ProcessPoolExecutor(
            max_workers=max(1, min(workers, len(ordered))),
            mp_context=multiprocessing.get_context("fork"),  # forked before its own thread starts
            initializer=_init_worker,
        )
        futures = [pool.submit(_unpack, job) for job in ordered]
    except (OSError, ImportError) as e:  # before any worker ran: nothing to undo
        raise WorkersUnavailable(f"cannot start worker processes: {e}") from e
    try:
        for future in as_completed(futures):
            job, sha256, error = future.result()
            if isinstance(error, OSError):
                raise error  # the installer reports it like any other disk error
            if error is not None:
                raise InstallError(error)
            if sha256 != job.entry.sha256:
                raise EntryChecksumMismatch(job.entry.name, job.entry.sha256, sha256 or "?")
            advance(job.entry.size)
    except BrokenProcessPool as e:
        raise InstallError(
            f"a process unpacking the packages died ({e}); run the installer again"
        ) from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def layer_cache(folder: Path) -> PackageCache:
    """The package cache rattler links from: the folders the workers unpacked (and verified)."""
    return PackageCache.new_layered([str(folder)], validation_mode=ValidationMode.skip())


def _init_worker() -> None:
    # signals are the parent's business: it stops handing out work and rolls back
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _unpack(job: UnpackJob) -> tuple[UnpackJob, str | None, OSError | str | None]:
    """In a worker: ``(job, sha256 of the archive, None)`` or ``(job, None, the error)``.

    When unpacking fails, damaged bytes are the likeliest cause: the archive is hashed then, so
    the parent reports the mismatch (one clear line) rather than the decompressor's complaint.
    """
    try:
        copy_range(job.installer, job.entry.offset, job.entry.size, job.archive)
    except PayloadError as e:
        return job, None, str(e)
    except OSError as e:
        return job, None, e
    try:
        sha256, _md5 = extract(job.archive, job.folder)
    except Exception as e:  # rattler's own error types carry the cause in their message
        actual = file_sha256(job.archive)
        if actual != job.entry.sha256:
            return job, actual, None
        return job, None, _disk_error(e) or f"unpacking {job.entry.name} failed: {_first_line(e)}"
    return job, sha256.hex(), None


def _disk_error(error: Exception) -> OSError | None:
    """The disk error behind a failed extraction, if that is what it was.

    rattler raises OSError for unreadable archives too; a disk error carries its errno only in
    its text ("... No space left on device (os error 28)").
    """
    if not isinstance(error, OSError):
        return None
    if error.errno is not None:
        return error
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return None
    number = int(found[1])
    return OSError(number, os.strerror(number))


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), repr(error))


def copy_range(source: Path, offset: int, size: int, target: Path) -> None:
    """Copy ``size`` bytes at ``offset`` of ``source`` into the new file ``target``."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(src.fileno(), dst.fileno(), size - copied, offset + copied)
                if n == 0:
                    break
                copied += n
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            src.seek(offset + copied)  # a filesystem that cannot: copy through a buffer
            while copied < size and (chunk := src.read(min(1 << 20, size - copied))):
                dst.write(chunk)
                copied += len(chunk)
    if copied != size:
        raise PayloadError(f"{source} ends inside {target.name}; download the installer again")
