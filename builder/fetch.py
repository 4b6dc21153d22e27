"""Download the locked archives through rattler into a shared cache, verified against the lock.

Cache layout: ``<cache>/pkgs/<sha256>/<file name>``. A file only appears under its final name
after its hash was checked (download to a unique temporary name, verify, rename), so two builds
sharing one cache never see a partial or unverified archive.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from lockship.builder.errors import ChecksumMismatch, FetchError
from rattler import Client, RepoDataRecord
from rattler.package_streaming import download_to_path

DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT = 60
DEFAULT_RETRIES = 3
BACKOFF_SECONDS = 0.5


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
    """sha256 and md5 of a file, streamed."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
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
        raise ChecksumMismatch(record.file_name, f"md5 {expected_md5}", f"md5 {md5}")
    return sha


async def download_url(client: Client, url: str, target: Path) -> None:
    """Download ``url`` (http(s) through rattler, or file://) to ``target``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        source = Path(unquote(parsed.path))
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


async def _download(client: Client, record: RepoDataRecord, target: Path) -> None:
    await download_url(client, record.url, target)


async def _download_with_retries(
    client: Client, record: RepoDataRecord, target: Path, retries: int
) -> None:
    for attempt in range(retries + 1):
        try:
            await _download(client, record, target)
            return
        except FetchError:
            target.unlink(missing_ok=True)
            if attempt == retries:
                raise
            await asyncio.sleep(BACKOFF_SECONDS * 2**attempt)


async def _fetch_one(
    client: Client,
    record: RepoDataRecord,
    cache_dir: Path,
    semaphore: asyncio.Semaphore,
    on_done: Callable[[FetchedPackage], None],
    retries: int,
) -> FetchedPackage:
    final = cache_path(cache_dir, record)
    if final.is_file():
        result = FetchedPackage(record, final, record_sha256(record) or "", True)
        on_done(result)
        return result
    async with semaphore:
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.parent / f".{final.name}.{uuid.uuid4().hex}.part"
        try:
            await _download_with_retries(client, record, part, retries)
            sha = await asyncio.to_thread(verify, record, part)
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
    result = FetchedPackage(record, final, sha, False)
    on_done(result)
    return result


async def _fetch_all(
    records: Sequence[RepoDataRecord],
    cache_dir: Path,
    client: Client,
    concurrency: int,
    on_done: Callable[[FetchedPackage], None],
    retries: int,
) -> list[FetchedPackage]:
    semaphore = asyncio.Semaphore(concurrency)
    tasks = [
        asyncio.ensure_future(_fetch_one(client, r, cache_dir, semaphore, on_done, retries))
        for r in records
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def fetch_packages(
    records: Sequence[RepoDataRecord],
    cache_dir: Path,
    *,
    client: Client | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: int = DEFAULT_RETRIES,
    on_done: Callable[[FetchedPackage], None] = lambda _: None,
) -> list[FetchedPackage]:
    """Make every record's archive available in the cache, verified; in ``records`` order.

    A failed download is retried ``retries`` times with exponential backoff before it is
    reported with its URL; a checksum mismatch is reported at once.
    """
    return asyncio.run(
        _fetch_all(records, cache_dir, client or Client(), concurrency, on_done, retries)
    )
