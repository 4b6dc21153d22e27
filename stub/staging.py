"""Getting the archives out of the installer, verified, to where rattler links them from.

Two routes behind one :class:`Stager` seam, chosen once by :func:`choose_stager`:

* :class:`WorkerStager` (Linux, when the source locates its archives as-is in the installer
  file: :meth:`~stub.source.PackageSource.locate`): worker processes unpack each archive
  straight out of that file into a package cache folder, verifying its sha256 on the way
  (``stub.unpack``); rattler links from that cache. No archive is copied.
* :class:`CopyStager` (elsewhere, or when no worker can start): the archives are copied into
  the staging folder, hashed while they are written, and rattler unpacks them.

Both link the locked records (``stub.channel.locked_records``) of every package, and stage only
the packages the payload carries and an update does not keep as they are
(``stub.manifest.kept_on_update``): rattler's transaction never asks for the others' archives.

rattler reads a local archive only from a ``file://`` URL and records that URL in
``conda-meta`` (py-rattler 0.28: given the locked URL it goes to the network even with the
archive in its cache folder), so the copy route's records point at the copies and are marked
``relocated``: linking then puts the locked URL back into those records, and only into those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lockship.stub.channel import locked_records
from lockship.stub.shared.manifest import Manifest, PackageInfo
from lockship.stub.shared.progress import Reporter
from lockship.stub.source import PackageSource, StoredEntry, write_entry
from lockship.stub.unpack import UnpackJob, WorkersUnavailable, layer_cache, unpack_archives
from rattler import PrefixRecord, RepoDataRecord
from rattler.package_cache import PackageCache

#: archives are copied (and hashed) by a few threads: sha256 releases the GIL, so two cores
#: hash two archives at once
COPY_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class StagedPackages:
    """What to link: the records (in manifest order) and where their files are."""

    folder: Path
    records: list[RepoDataRecord]
    #: the package cache to link from, when the packages were unpacked already
    package_cache: PackageCache | None
    #: the records' URLs point at staged copies, not at the locked URLs
    relocated: bool
    #: what the prefix held before (an update's rattler transaction diffs against it)
    installed: tuple[PrefixRecord, ...] = ()

    @property
    def cache_dir(self) -> Path:
        """Where rattler unpacks the archives (when there is no ``package_cache``)."""
        return self.folder / "cache"


class Stager(Protocol):
    def stage(self, folder: Path, reporter: Reporter) -> StagedPackages:
        """Put every package of the source where rattler links it from, verified, in
        ``folder``; raise on the first archive that does not match its sha256."""


def choose_stager(
    manifest: Manifest,
    source: PackageSource,
    workers: int,
    unchanged: frozenset[str] = frozenset(),
) -> Stager:
    """Worker processes when there are any and every archive to stage lies as-is in one
    installer file (:meth:`PackageSource.locate`); verified copies otherwise.

    ``unchanged`` names the entries an update need not stage (``stub.manifest.kept_on_update``).
    """
    packages = _to_stage(manifest, unchanged)
    if workers:
        found = [source.locate(p.entry) for p in packages]
        stored = [s for s in found if s is not None]
        if len(stored) == len(found) and len({s.payload.path for s in stored}) <= 1:
            pairs = tuple(zip(packages, stored, strict=True))
            return WorkerStager(manifest, source, workers, pairs, unchanged)
    return CopyStager(manifest, source, unchanged=unchanged)


@dataclass(frozen=True)
class CopyStager:
    manifest: Manifest
    source: PackageSource
    threads: int = COPY_THREADS
    unchanged: frozenset[str] = frozenset()

    def stage(self, folder: Path, reporter: Reporter) -> StagedPackages:
        size = sum(p.size for p in _to_stage(self.manifest, self.unchanged))
        reporter.start("Unpacking", size, unit="B")
        staged = self.copy(folder, reporter)
        reporter.finish()
        return staged

    def copy(self, folder: Path, reporter: Reporter) -> StagedPackages:
        """:meth:`stage` inside a progress stage that the caller began."""
        manifest = self.manifest
        records = locked_records(manifest.packages, folder / "records")
        carried = _to_stage(manifest, self.unchanged)
        targets = [folder / "pkgs" / p.subdir / p.file_name for p in carried]
        for parent in {t.parent for t in targets}:
            parent.mkdir(parents=True, exist_ok=True)
        copy_entries(self.source, carried, targets, reporter.advance, self.threads)
        by_entry = {p.entry: target for p, target in zip(carried, targets, strict=True)}
        for record, package in zip(records, manifest.packages, strict=True):
            if package.entry in by_entry:
                record.url = by_entry[package.entry].as_uri()
        return StagedPackages(folder, records, None, relocated=True)


@dataclass(frozen=True)
class WorkerStager:
    manifest: Manifest
    source: PackageSource
    workers: int
    #: the packages to stage, each with where its archive lies (all in one installer file)
    stored: tuple[tuple[PackageInfo, StoredEntry], ...]
    unchanged: frozenset[str] = frozenset()

    def stage(self, folder: Path, reporter: Reporter) -> StagedPackages:
        records = locked_records(self.manifest.packages, folder / "records")
        cache = folder / "cache"
        jobs = [
            UnpackJob(s.entry, folder / "pkgs" / p.subdir / p.file_name, cache / _stem(p))
            for p, s in self.stored
        ]
        for parent in {job.pipe.parent for job in jobs}:
            parent.mkdir(parents=True, exist_ok=True)
        reporter.start("Unpacking", sum(p.size for p, _ in self.stored), unit="B")
        try:
            if self.stored:
                payload = self.stored[0][1].payload
                unpack_archives(payload, jobs, self.workers, reporter.advance)
        except WorkersUnavailable as e:
            reporter.message(f"Unpacking without worker processes ({e})")
            copier = CopyStager(self.manifest, self.source, unchanged=self.unchanged)
            staged = copier.copy(folder, reporter)
        else:
            staged = StagedPackages(folder, records, layer_cache(cache), relocated=False)
        reporter.finish()
        return staged


def _to_stage(manifest: Manifest, unchanged: frozenset[str]) -> list[PackageInfo]:
    """What the payload carries and the prefix does not already hold as locked."""
    return [p for p in manifest.carried_packages if p.entry not in unchanged]


def _stem(package: PackageInfo) -> str:
    """The folder name rattler looks a package up by in its cache."""
    return f"{package.name}-{package.version}-{package.build}"


def copy_entries(
    source: PackageSource,
    packages: Sequence[PackageInfo],
    targets: Sequence[Path],
    advance: Callable[[int], None],
    threads: int,
) -> None:
    """Write each package's entry to its target (new files), verified, in a few threads.

    On the first failure the copies not yet begun are dropped and the ones under way are
    finished (or fail) before this raises, so a rollback never races with a writer.
    """

    def work(package: PackageInfo, target: Path) -> int:
        write_entry(source, package.entry, target)
        return package.size

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="copy") as pool:
        futures = [pool.submit(work, p, t) for p, t in zip(packages, targets, strict=True)]
        try:
            for future in as_completed(futures):
                advance(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            raise


@contextmanager
def discarding(staged: StagedPackages) -> Iterator[None]:
    """Remove the staged packages while the body runs; wait for that before leaving.

    The body may write into the staging folder too (wheels, the post-install script): only
    the package cache, the archives and the record files go.

    On POSIX ``rm -rf`` does it: it needs no GIL, so it runs beside the body on another core
    (Python's rmtree took twice as long, competing with the body for the GIL).
    """
    folders = (staged.cache_dir, staged.folder / "pkgs", staged.folder / "records")
    existing = [str(f) for f in folders if f.exists()]
    remover: subprocess.Popen[bytes] | None = None
    if existing and os.name == "posix":
        with suppress(OSError):
            remover = subprocess.Popen(
                ["rm", "-rf", "--", *existing],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    cleaner = None
    if remover is None and existing:
        cleaner = threading.Thread(target=_remove_all, args=(existing,), name="cleanup")
        cleaner.start()
    try:
        yield
    finally:
        if remover is not None:
            remover.wait()
        if cleaner is not None:
            cleaner.join()
        _remove_all(existing)  # whatever rm could not remove


def _remove_all(folders: list[str]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
