"""Unpack the installer's archives in worker processes, verified, into a package cache.

rattler installs ``file://`` archives without checking their sha256, so the installer must
check them; and rattler's extraction hashes every byte it reads anyway. On Linux the installer
therefore lets worker processes do both in one pass: the parent streams each archive out of the
installer into a named pipe (``splice``: the bytes never pass through Python), a worker unpacks
it from there with ``rattler.package_streaming.extract`` into a package cache folder and returns
the sha256 that extraction computed. The parent compares it with the payload index and stops at
the first mismatch, before anything is linked. ``rattler.install`` then links from that folder (a
package cache layer, :func:`layer_cache`) instead of unpacking every archive a second time.
Nothing but the unpacked folders is written: no copy of an archive.

Processes, not threads: py-rattler's ``extract`` holds the GIL, so threads would unpack one
archive at a time. The workers are forked before any other thread of the installer starts, so
they start in milliseconds with rattler already imported. ``fork`` is only safe to rely on on
Linux; elsewhere ``stub.preflight.worker_count`` is 0 and rattler unpacks verified copies
(``stub.staging``).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lockship.stub.compat import disk_error, one_line
from lockship.stub.errors import InstallError
from lockship.stub.shared.boundary import CHUNK_SIZE
from lockship.stub.shared.payload import Entry, EntryChecksumMismatch, Payload, iter_entry
from lockship.stub.signals import deferred
from rattler.package_cache import PackageCache, ValidationMode
from rattler.package_streaming import extract

F_SETPIPE_SZ = 1031  # Linux; not in Python 3.11's fcntl module
PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies
PIPE_SIZE = 1024 * 1024  # the default is 64 KiB: 16 times more wake-ups


class WorkersUnavailable(InstallError):
    """No worker processes here (no writable /dev/shm for their locks, fork refused ...)."""


@dataclass(frozen=True)
class UnpackJob:
    """Unpack ``entry``, streamed into the named pipe ``pipe``, into ``folder``."""

    entry: Entry
    pipe: Path
    folder: Path


def unpack_archives(
    payload: Payload, jobs: Sequence[UnpackJob], workers: int, advance: Callable[[int], None]
) -> None:
    """Run ``jobs`` in ``workers`` forked processes; raise on the first failure or mismatch.

    After a failure (or a signal) the archives still being unpacked are finished, the others are
    dropped; a worker that dies (killed for lack of memory, say) fails the install. Raises
    :class:`WorkersUnavailable`, having written nothing, when no worker can be started. The pipes
    are gone when this returns.
    """
    ordered = sorted(jobs, key=lambda job: job.entry.size, reverse=True)  # big ones first
    made: list[Path] = []
    pool: ProcessPoolExecutor | None = None
    feeders: list[_Feeder] = []
    try:
        # a signal must not land between starting the workers and starting their feeders: a
        # worker waiting for a pipe nobody feeds would never finish
        with deferred():
            try:
                for job in ordered:
                    os.mkfifo(job.pipe, 0o600)
                    made.append(job.pipe)
                pool = ProcessPoolExecutor(
                    max_workers=max(1, min(workers, len(ordered))),
                    mp_context=multiprocessing.get_context("fork"),  # forks before its thread
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
                futures = {pool.submit(_unpack, job): job for job in ordered}  # this forks
            except (OSError, ImportError) as e:  # before any worker ran: nothing to undo
                raise WorkersUnavailable(f"cannot start worker processes: {e}") from e
            feeders = [_Feeder(payload.path, job) for job in ordered]  # threads after the fork
        for future in as_completed(futures):
            job = futures[future]
            sha256, error = future.result()
            if error is not None:
                # damaged bytes are the likeliest cause: say so rather than what the decompressor
                # made of them (this raises EntryChecksumMismatch or PayloadError if so)
                for _ in iter_entry(payload, job.entry):
                    pass
                if isinstance(error, OSError):
                    raise error  # the installer reports it like any other disk error
                raise InstallError(f"unpacking {job.entry.name} failed: {error}")
            if sha256 != job.entry.sha256:
                raise EntryChecksumMismatch(job.entry.name, job.entry.sha256, sha256)
            advance(job.entry.size)
    except BrokenProcessPool as e:
        raise InstallError(
            f"a process unpacking the packages died ({e}); run the installer again"
        ) from e
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for feeder in feeders:
            feeder.stop()
        _remove(made)


def layer_cache(folder: Path) -> PackageCache:
    """The package cache rattler links from: the folders the workers unpacked (and verified)."""
    return PackageCache.new_layered([str(folder)], validation_mode=ValidationMode.skip())


def _init_worker(parent: int) -> None:
    # signals are the parent's business: it stops handing out work and rolls back
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # and should the parent be killed outright, its workers must not linger
    with suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


def _unpack(job: UnpackJob) -> tuple[str, OSError | str | None]:
    """In a worker: ``(sha256 of the archive, None)`` or ``("", the error)``."""
    try:
        sha256, _md5 = extract(job.pipe, job.folder)
    except Exception as e:  # rattler's own error types carry the cause in their message
        return "", disk_error(e) or one_line(e)
    return sha256.hex(), None


class _Feeder:
    """A thread streaming one entry of the installer into the pipe its worker reads."""

    def __init__(self, installer: Path, job: UnpackJob) -> None:
        self.installer, self.job = installer, job
        self.thread = threading.Thread(target=self._run, name=f"feed {job.entry.name}")
        self.thread.start()

    def _run(self) -> None:
        import fcntl  # POSIX only, like the workers

        # blocks until the worker opens the pipe; a reader that stops early ends the feed
        with suppress(OSError), open(os.open(self.job.pipe, os.O_WRONLY), "wb", 0) as pipe:
            with suppress(OSError):
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
            with open(self.installer, "rb", buffering=0) as source:
                copy_range(source, pipe, self.job.entry.offset, self.job.entry.size)

    def stop(self) -> None:
        """End the thread, also when no worker ever opened its pipe."""
        while self.thread.is_alive():
            # a reader that comes and goes releases a writer still waiting in open()
            with suppress(OSError):
                os.close(os.open(self.job.pipe, os.O_RDONLY | os.O_NONBLOCK))
            self.thread.join(0.05)


def copy_range(source: BinaryIO, target: BinaryIO, offset: int, size: int) -> None:
    """Write ``size`` bytes at ``offset`` of ``source`` to ``target`` (a pipe or a file).

    ``splice`` moves them inside the kernel; where it cannot, they go through a buffer. Stops
    early when ``source`` ends: the worker then sees a short archive and the check fails.
    """
    copied = 0
    try:
        while copied < size:
            n = os.splice(
                source.fileno(), target.fileno(), size - copied, offset_src=offset + copied
            )
            if n == 0:
                return
            copied += n
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    source.seek(offset + copied)
    while copied < size and (chunk := source.read(min(CHUNK_SIZE, size - copied))):
        target.write(chunk)
        copied += len(chunk)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with suppress(OSError):
            path.unlink()
