"""PyPI wheels locked in a pixi.lock: fetched at build time, verified, carried in the payload."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lockship.builder.errors import ChecksumMismatch, FetchError
from lockship.builder.fetch import BACKOFF_SECONDS, download_url, hash_file
from lockship.builder.lockfile import LockedWheel
from rattler import Client


@dataclass(frozen=True)
class FetchedWheel:
    wheel: LockedWheel
    path: Path


def wheel_source(wheel: LockedWheel, base: Path) -> str:
    """A URL for the wheel; local and relative paths are resolved against ``base``."""
    location = wheel.location.split("#", 1)[0]
    if urlparse(location).scheme in ("http", "https", "file"):
        return location
    path = Path(location)
    return (path if path.is_absolute() else (base / path)).resolve().as_uri()


async def _fetch(
    wheel: LockedWheel, cache_dir: Path, base: Path, client: Client, retries: int
) -> FetchedWheel:
    url = wheel_source(wheel, base)
    key = wheel.sha256 or hashlib.sha256(url.encode()).hexdigest()
    target = cache_dir / "wheels" / key / wheel.file_name
    if target.is_file():
        return FetchedWheel(wheel, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{id(target)}.part")
    try:
        for attempt in range(retries + 1):
            try:
                await download_url(client, url, part)
                break
            except FetchError:
                if attempt == retries:
                    raise
                await asyncio.sleep(BACKOFF_SECONDS * 2**attempt)
        actual = hash_file(part)[0]
        if wheel.sha256 and actual != wheel.sha256:
            raise ChecksumMismatch(wheel.file_name, wheel.sha256, actual)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    return FetchedWheel(wheel, target)


def fetch_wheels(
    wheels: Sequence[LockedWheel], cache_dir: Path, *, base: Path, client: Client, retries: int
) -> list[FetchedWheel]:
    if not wheels:
        return []

    async def run() -> list[FetchedWheel]:
        return list(
            await asyncio.gather(*(_fetch(w, cache_dir, base, client, retries) for w in wheels))
        )

    return asyncio.run(run())
