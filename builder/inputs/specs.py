"""Specs (``--spec``, an ``environment.yml``) solved with rattler at build time.

An ``environment.yml`` is read as a :class:`SpecRequest`; :func:`solve_specs` turns a request
into a :class:`SolvedSource` and writes the solved ``pixi.lock``, which the payload carries.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml
from lockship.builder.errors import LockfileError
from lockship.builder.inputs.model import PlatformEnvironment, records_for
from lockship.stub.shared.boundary import atomic_write
from rattler import BuildString as RattlerBuildString
from rattler import (
    Channel,
    Client,
    Gateway,
    GenericVirtualPackage,
    LockChannel,
    LockFile,
    LockPlatform,
    MatchSpec,
    PackageName,
    RepoDataRecord,
    Subdir,
    Version,
)

#: what a target machine is assumed to offer when solving for it (pixi's defaults)
DEFAULT_VIRTUAL_PACKAGES = {
    "linux": {"__unix": "0", "__linux": "4.18", "__glibc": "2.28"},
    "osx": {"__unix": "0", "__osx": "13.0"},
    "win": {"__win": "0"},
}


@dataclass(frozen=True)
class SpecRequest:
    """What to solve: specs from these channels; ``name`` is the installer's default name."""

    name: str | None
    channels: tuple[str, ...]
    specs: tuple[str, ...]

    def extended(self, specs: Sequence[str], channels: Sequence[str]) -> SpecRequest:
        """This request plus more specs; ``channels``, if any, replace its own."""
        return SpecRequest(self.name, tuple(channels) or self.channels, self.specs + tuple(specs))


@dataclass(frozen=True)
class SolvedSource:
    kind: ClassVar[str] = "specs"
    #: the solved lock lockship wrote, carried in the payload
    solved_lock: Path
    name: str | None
    by_platform: Mapping[str, PlatformEnvironment]
    environment: str = "default"
    version: None = None

    @property
    def path(self) -> Path:
        return self.solved_lock

    def platforms(self) -> tuple[str, ...]:
        return tuple(self.by_platform)

    def for_platform(self, platform: str) -> PlatformEnvironment:
        return records_for(self.by_platform, platform, "the specs")


def read_environment_yml(path: Path) -> SpecRequest:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise LockfileError(f"cannot read {path}: {e}") from e
    if not isinstance(document, dict) or not isinstance(document.get("dependencies"), list):
        raise LockfileError(f"{path} is not an environment.yml (no dependencies list)")
    specs, pip = [], []
    for item in document["dependencies"]:
        if isinstance(item, dict):
            pip.extend(item.get("pip", []))
        else:
            specs.append(str(item))
    if pip:
        raise LockfileError(
            f"{path} has pip dependencies ({', '.join(map(str, pip))}); lock the environment "
            "with pixi (which locks PyPI packages) and build from its pixi.lock instead"
        )
    channels = tuple(str(c) for c in document.get("channels") or ())
    name = document.get("name")
    return SpecRequest(str(name) if name else None, channels, tuple(specs))


def virtual_packages_for(platform: str) -> list[GenericVirtualPackage]:
    family = platform.split("-", 1)[0]
    return [
        GenericVirtualPackage(PackageName(name), Version(version), RattlerBuildString("0"))
        for name, version in DEFAULT_VIRTUAL_PACKAGES.get(family, {}).items()
    ]


def solve_specs(
    request: SpecRequest,
    platforms: Sequence[str],
    *,
    client: Client,
    cache_dir: Path,
    lock_path: Path,
) -> SolvedSource:
    """Solve the specs for each platform with rattler and write the solved pixi.lock."""
    if not request.specs:
        raise LockfileError("no specs to solve: pass --spec or an environment.yml")
    if not request.channels:
        raise LockfileError("specs need at least one channel: pass -c CHANNEL")
    for spec in request.specs:
        try:
            MatchSpec(spec)
        except Exception as e:
            raise LockfileError(f"{spec!r} is not a valid package spec: {e}") from e
    channels = [Channel(c) for c in request.channels]
    gateway = Gateway(cache_dir=cache_dir / "repodata", client=client)
    lock_platforms = [LockPlatform(p) for p in platforms]
    lock = LockFile(lock_platforms)
    by_platform = {}
    for platform, lock_platform in zip(platforms, lock_platforms, strict=True):
        try:
            records = asyncio.run(_solve(channels, list(request.specs), platform, gateway))
        except Exception as e:  # rattler's solver and gateway errors
            first = str(e).strip().splitlines()
            raise LockfileError(
                f"cannot solve {' '.join(request.specs)} for {platform}: "
                + (" ".join(first[:3]) if first else type(e).__name__)
            ) from e
        for record in records:
            lock.add_conda_package("default", lock_platform, record)
        by_platform[platform] = PlatformEnvironment("default", platform, tuple(records))
    lock.set_channels("default", [LockChannel(c) for c in request.channels])
    _write_lock(lock, lock_path)
    return SolvedSource(lock_path, request.name, by_platform)


def _write_lock(lock: LockFile, path: Path) -> None:
    """Write ``lock`` atomically (rattler writes to a path: serialize beside it, then copy in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lockship-lock-", dir=path.parent) as tmp:
        lock.to_path(Path(tmp) / path.name)
        text = (Path(tmp) / path.name).read_bytes()
    with atomic_write(path) as out:
        out.write(text)


async def _solve(
    channels: list[Channel], specs: list[str], platform: str, gateway: Gateway
) -> list[RepoDataRecord]:
    from rattler import solve

    return await solve(
        sources=channels,
        specs=specs,
        gateway=gateway,
        platforms=[Subdir(platform), Subdir("noarch")],
        virtual_packages=virtual_packages_for(platform),
    )
