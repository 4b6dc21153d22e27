"""Download archives through rattler into a shared cache, verified before they enter it.

Cache layout: ``<cache>/pkgs/<sha256>/<file name>``. Every download of the builder (locked
packages, ``@EXPLICIT`` archives, PyPI wheels, published stubs) goes through
:func:`download_verified`: to a new, unpredictable temporary name beside the cache entry, retried
with backoff, checked, and only then renamed into place. Two builds sharing one cache never see a
partial or unverified file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from lockship.builder.errors import ChecksumMismatch, FetchError
from lockship.builder.inputs.model import url_file_name
from lockship.stub.shared.boundary import CHUNK_SIZE
from rattler import Client, RepoDataRecord
from rattler.package_streaming import download_to_path

BACKOFF_SECONDS = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class FetchedPackage:
    record: RepoDataRecord
    path: Path
    sha256: str
    from_cache: bool


def record_sha256(record: RepoDataRecord) -> str | None:
    digest = record.sha256
    return digest.hex() if digest else None


def cache_path(cache_dir: Path, record: RepoDataRecord) -> Path:
    key = record_sha256(record) or hashlib.sha256(record.url.encode()).hexdigest()
    return cache_dir / "pkgs" / key / record.file_name


def hash_file(path: Path) -> tuple[str, str]:
    """sha256 and md5 of a file in one read (conda records may carry only an md5)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def verify(record: RepoDataRecord, path: Path) -> str:
    """Check ``path`` against the hashes the lock records; return its sha256."""
    sha, md5 = hash_file(path)
    expected_sha = record_sha256(record)
    if expected_sha and sha != expected_sha:
        raise ChecksumMismatch(record.file_name, expected_sha, sha)
    expected_md5 = record.md5.hex() if record.md5 else None
    if not expected_sha and expected_md5 and md5 != expected_md5:
        raise ChecksumMismatch(record.file_name, expected_md5, md5, "md5")
    return sha


def _cached_sha256(record: RepoDataRecord, path: Path) -> str | None:
    """The sha256 of the cached archive of ``record``; None if it must be downloaded.

    An archive locked by sha256 is cached under that hash, checked when it entered the cache.
    One locked by md5 only is cached under its URL, which may serve other bytes by the next
    build (a re-uploaded package, a rebuilt ``file://`` archive): it is checked again.
    """
    if not path.is_file():
        return None
    sha = record_sha256(record)
    if sha:
        return sha
    try:
        return verify(record, path)
    except (ChecksumMismatch, OSError):
        return None  # downloaded again, and checked on the way in


def local_path(url: str) -> Path | None:
    """The file a ``file://`` URL names; None for other URLs."""
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


async def download_url(client: Client, url: str, target: Path) -> None:
    """Download ``url`` (http(s) through rattler, or file://) to ``target``, once."""
    source = local_path(url)
    if source is not None:
        try:
            shutil.copyfile(source, target)
        except OSError as e:
            raise FetchError(url, e.strerror or str(e)) from e
        return
    try:
        await download_to_path(client, url, target)
    except Exception as e:  # rattler raises plain RuntimeErrors for HTTP and I/O failures
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = " ".join(lines[:2]) if lines else type(e).__name__
        raise FetchError(url, reason) from e


async def with_retries(attempt: Callable[[], Awaitable[T]], retries: int) -> T:
    """Run ``attempt``; after a FetchError run it again, up to ``retries`` times, with
    exponential backoff. Other errors (a checksum mismatch) are not retried."""
    for n in range(retries):
        try:
            return await attempt()
        except FetchError:
            await asyncio.sleep(BACKOFF_SECONDS * 2**n)
    return await attempt()


async def download_verified(
    client: Client,
    url: str,
    folder: Path,
    *,
    retries: int,
    place: Callable[[Path], tuple[Path, str]],
) -> tuple[Path, str]:
    """Download ``url`` to a new temporary folder in ``folder``; ``place(file)`` checks it
    and returns where it belongs and its sha256; it is renamed there. Returns the same pair.

    ``folder`` must be on the file system of the final place (the cache's own folders are).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = url_file_name(url) or "download"
    # a folder of its own: a download that is cancelled (another one failed) may still be
    # written by rattler's runtime after the task is gone, and once the folder is removed
    # nothing can recreate a file in it
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=folder))
    part = work / name
    try:
        await with_retries(lambda: download_url(client, url, part), retries)
        final, sha256 = await asyncio.to_thread(place, part)
        final.parent.mkdir(parents=True, exist_ok=True)
        part.chmod(0o644)
        os.replace(part, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final, sha256


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure the others are cancelled, then it is raised."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _fetch_one(
    client: Client,
    record: RepoDataRecord,
    cache_dir: Path,
    semaphore: asyncio.Semaphore,
    on_done: Callable[[FetchedPackage], None],
    retries: int,
) -> FetchedPackage:
    final = cache_path(cache_dir, record)
    cached = await asyncio.to_thread(_cached_sha256, record, final)
    if cached is not None:
        result = FetchedPackage(record, final, cached, True)
    else:
        async with semaphore:
            _, sha = await download_verified(
                client,
                record.url,
                final.parent,
                retries=retries,
                place=lambda part: (final, verify(record, part)),
            )
        result = FetchedPackage(record, final, sha, False)
    on_done(result)
    return result


def fetch_packages(
    records: Sequence[RepoDataRecord],
    cache_dir: Path,
    *,
    client: Client,
    concurrency: int,
    retries: int,
    on_done: Callable[[FetchedPackage], None] = lambda _: None,
) -> list[FetchedPackage]:
    """Make every record's archive available in the cache, verified; in ``records`` order.

    A failed download is retried ``retries`` times with exponential backoff before it is
    reported with its URL; a checksum mismatch is reported at once.
    """

    async def run() -> list[FetchedPackage]:
        semaphore = asyncio.Semaphore(concurrency)
        return await gather_all(
            [_fetch_one(client, r, cache_dir, semaphore, on_done, retries) for r in records]
        )

    return asyncio.run(run())
