"""An ``@EXPLICIT`` file (``conda list --explicit [--md5]``) as a
:class:`~lockship.builder.inputs.model.Source`.

Such a file names archives by URL (with an md5 or sha256 fragment, or none), so its records are
read from the archives themselves. They are fetched once, on the builder's one download path
(retried, verified against the fragment, then renamed into ``<cache>/pkgs/<sha256>/``), where
the build later finds them. The sha256 of a remote archive named without one is remembered by
its URL and md5 (``<cache>/explicit/``); a local (``file://``) archive is hashed at every build.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lockship.builder.errors import ChecksumMismatch, FetchError, LockfileError
from lockship.builder.fetch import download_verified, gather_all, hash_file, local_path
from lockship.builder.inputs.model import PlatformEnvironment, records_for, url_file_name
from lockship.stub.shared.boundary import write_text_atomically
from rattler import Client, RepoDataRecord
from rattler.explicit_environment import ExplicitEnvironmentSpec

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ExplicitSource:
    kind: ClassVar[str] = "explicit"
    path: Path
    platform: str
    records: tuple[RepoDataRecord, ...]
    environment: str = "default"
    name: None = None
    version: None = None
    solved_lock: None = None

    def platforms(self) -> tuple[str, ...]:
        return (self.platform,)

    def for_platform(self, platform: str) -> PlatformEnvironment:
        mine = PlatformEnvironment(self.environment, self.platform, self.records)
        return records_for({self.platform: mine}, platform, str(self.path))


@dataclass(frozen=True)
class _Named:
    """One line of an explicit file: a URL and the hash its fragment gives, if any."""

    url: str
    file_name: str
    sha256: str | None
    md5: str | None

    @classmethod
    def parse(cls, line: str) -> _Named:
        url, _, fragment = line.partition("#")
        fragment = fragment.removeprefix("sha256:").lower()
        return cls(
            url,
            url_file_name(url),
            fragment if len(fragment) == 64 else None,
            fragment if len(fragment) == 32 else None,
        )

    def check(self, path: Path) -> str:
        """The sha256 of ``path``, after checking it against the fragment's hash."""
        sha, md5 = hash_file(path)
        if self.sha256 and sha != self.sha256:
            raise ChecksumMismatch(self.file_name, self.sha256, sha)
        if self.md5 and md5 != self.md5:
            raise ChecksumMismatch(self.file_name, self.md5, md5, "md5")
        return sha


def read_explicit(
    path: Path, *, cache_dir: Path, client: Client, concurrency: int, retries: int
) -> ExplicitSource:
    try:
        spec = ExplicitEnvironmentSpec.from_path(path)
    except Exception as e:  # rattler's own parse errors
        raise LockfileError(f"cannot read the explicit file {path}: {e}") from e
    platform = str(spec.platform) if spec.platform else None
    named = [_Named.parse(str(p.url)) for p in spec.packages]
    if platform is None:
        subdirs = {n.url.rsplit("/", 2)[-2] for n in named} - {"noarch"}
        if len(subdirs) != 1:
            raise LockfileError(f"{path} names no platform (add a '# platform: linux-64' line)")
        platform = subdirs.pop()

    async def run() -> list[RepoDataRecord]:
        semaphore = asyncio.Semaphore(concurrency)
        return await gather_all([_record(n, cache_dir, client, semaphore, retries) for n in named])

    return ExplicitSource(path, platform, tuple(asyncio.run(run())))


async def _record(
    named: _Named, cache_dir: Path, client: Client, semaphore: asyncio.Semaphore, retries: int
) -> RepoDataRecord:
    archive = await _fetch(named, cache_dir, client, semaphore, retries)
    try:
        record = await RepoDataRecord.from_package_archive(archive)
    except Exception as e:
        raise FetchError(named.url, f"not a conda package ({e})") from e
    record.url = named.url
    record.channel = named.url.rsplit("/", 2)[0]
    return record


async def _fetch(
    named: _Named, cache_dir: Path, client: Client, semaphore: asyncio.Semaphore, retries: int
) -> Path:
    """The verified archive in ``<cache>/pkgs/<sha256>/``, downloaded only if it is not there."""
    pkgs = cache_dir / "pkgs"
    sha = named.sha256
    local = local_path(named.url)
    remembered = None
    if local is not None:
        try:
            sha = await asyncio.to_thread(named.check, local)
        except OSError as e:
            raise FetchError(named.url, e.strerror or str(e)) from e
    elif sha is None:
        key = hashlib.sha256(f"{named.url}#{named.md5 or ''}".encode()).hexdigest()
        remembered = cache_dir / "explicit" / f"{key}.sha256"
        sha = _read_remembered(remembered)
    if sha is not None and (pkgs / sha / named.file_name).is_file():
        return pkgs / sha / named.file_name
    expected = sha

    def place(part: Path) -> tuple[Path, str]:
        actual = named.check(part)
        if expected and actual != expected:  # a local file that changed while it was copied
            raise ChecksumMismatch(named.file_name, expected, actual)
        return pkgs / actual / named.file_name, actual

    async with semaphore:
        archive, sha = await download_verified(
            client, named.url, pkgs, retries=retries, place=place
        )
    if remembered is not None:
        remembered.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(remembered, sha + "\n")
    return archive


def _read_remembered(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if _SHA256.fullmatch(text) else None
