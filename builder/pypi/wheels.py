"""PyPI wheels locked in a pixi.lock: fetched (or built from source, :mod:`.sdist`) at build
time, verified, checked against the target's python and platform, carried in the payload.

Cache layout: ``<cache>/wheels/<sha256>/<file name>``. A local wheel (a path, or a ``file://``
URL) is read and hashed at every build, so a rebuilt ``dist/app-1.0-py3-none-any.whl`` is the
one shipped; only the content of what it hashes to is cached. A remote wheel is cached by its
locked sha256, or, locked without one, by its URL (nothing to check it against).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockship.builder.errors import BuildError, ChecksumMismatch, FetchError
from lockship.builder.fetch import download_verified, gather_all, local_path
from lockship.builder.inputs.model import LockedWheel, PlatformEnvironment, location_url
from lockship.builder.paths import host_platform
from lockship.builder.pypi.sdist import BuiltWheel, build_sources
from lockship.builder.pypi.tags import check_wheel_tags, is_pure
from lockship.stub.shared.boundary import file_sha256
from rattler import Client


@dataclass(frozen=True)
class FetchedWheel:
    wheel: LockedWheel
    path: Path
    #: built at build time from a locked sdist, local project or git URL
    from_source: bool = False


def _checked(name: str, path: Path, expected: str | None) -> str:
    actual = file_sha256(path)
    if expected and actual != expected:
        raise ChecksumMismatch(name, expected, actual)
    return actual


async def _fetch(
    wheel: LockedWheel, cache_dir: Path, base: Path, client: Client, retries: int
) -> FetchedWheel:
    url = location_url(wheel.location, base)
    folder = cache_dir / "wheels"
    local = local_path(url)
    expected = wheel.sha256
    if local is not None:
        try:
            expected = await asyncio.to_thread(_checked, wheel.file_name, local, expected)
        except OSError as e:
            raise FetchError(url, e.strerror or str(e)) from e
    key = expected or hashlib.sha256(url.encode()).hexdigest()
    target = folder / key / wheel.file_name
    if not target.is_file():
        await download_verified(
            client,
            url,
            folder,
            retries=retries,
            place=lambda part: (target, _checked(wheel.file_name, part, expected)),
        )
    return FetchedWheel(wheel, target)


def fetch_wheels(
    wheels: Sequence[LockedWheel], cache_dir: Path, *, base: Path, client: Client, retries: int
) -> list[FetchedWheel]:
    if not wheels:
        return []

    async def run() -> list[FetchedWheel]:
        return await gather_all([_fetch(w, cache_dir, base, client, retries) for w in wheels])

    return asyncio.run(run())


def ship_wheels(
    environment: PlatformEnvironment,
    cache_dir: Path,
    *,
    base: Path,
    client: Client,
    retries: int,
    on_build: Callable[[str], None] = lambda _: None,
) -> list[FetchedWheel]:
    """Every wheel one platform's installer carries: locked wheels fetched, locked sources
    built, each checked against the platform and the locked python."""
    fetched = fetch_wheels(environment.wheels, cache_dir, base=base, client=client, retries=retries)
    built = build_sources(
        environment.sources, cache_dir, base=base, client=client, retries=retries, on_build=on_build
    )
    check_built_platform(built, environment.platform)
    wheels = fetched + [
        FetchedWheel(
            LockedWheel(b.source.name, b.source.version, b.path.as_uri(), None), b.path, True
        )
        for b in built
    ]
    check_wheel_tags([w.path.name for w in wheels], environment.records, environment.platform)
    return wheels


def check_built_platform(built: Sequence[BuiltWheel], platform: str) -> None:
    """A wheel built here that is not pure ships only to this machine's platform."""
    host = host_platform()
    if platform == host:
        return
    refused = sorted(
        {f"{b.source.name} ({b.path.name})" for b in built if not is_pure(b.path.name)}
    )
    if refused:
        raise BuildError(
            f"PyPI sources that build into {host} wheels cannot ship to {platform}: "
            f"{', '.join(refused)}; build each wheel on {platform} and pass it with --inject, "
            "or leave PyPI sources out with --ignore-pypi-non-wheel"
        )
