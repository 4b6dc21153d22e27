"""A ``conda-lock.yml`` (version 1) as a :class:`~lockship.builder.inputs.model.Source`: the
packages of the chosen categories, per platform; ``manager: pip`` packages become wheels (or
sources built into wheels) like a pixi.lock's PyPI packages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from lockship.builder.errors import LockfileError
from lockship.builder.inputs.lockfile import load_lockfile
from lockship.builder.inputs.model import (
    LockedSource,
    LockedWheel,
    PlatformEnvironment,
    locked_pypi_package,
    records_for,
)


@dataclass(frozen=True)
class CondaLockSource:
    kind: ClassVar[str] = "conda-lock"
    path: Path
    #: the platforms its metadata names
    locked_platforms: tuple[str, ...]
    by_platform: Mapping[str, PlatformEnvironment]
    environment: str = "default"
    name: None = None
    version: None = None
    solved_lock: None = None

    def platforms(self) -> tuple[str, ...]:
        return self.locked_platforms

    def for_platform(self, platform: str) -> PlatformEnvironment:
        return records_for(self.by_platform, platform, str(self.path))


def pip_packages(
    path: Path, packages: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[tuple[LockedWheel, ...], tuple[LockedSource, ...]]]:
    """Per platform, the ``manager: pip`` packages: wheels, and sources to build."""
    wheels: dict[str, dict[str, LockedWheel]] = {}
    sources: dict[str, dict[str, LockedSource]] = {}
    broken: set[str] = set()
    for package in packages:
        if package.get("manager") != "pip":
            continue
        name = str(package.get("name"))
        url, platform = package.get("url"), package.get("platform")
        hashes = package.get("hash")
        sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
        if not isinstance(url, str) or not isinstance(platform, str):
            broken.add(name)
            continue
        locked = locked_pypi_package(
            name, str(package.get("version")), url, str(sha256) if sha256 else None
        )
        if isinstance(locked, LockedWheel):
            wheels.setdefault(platform, {})[name] = locked
        else:
            sources.setdefault(platform, {})[name] = locked
    if broken:
        raise LockfileError(
            f"{path} lists pip packages without a url or platform: {', '.join(sorted(broken))}; "
            "lock the file again with conda-lock"
        )
    return {
        p: (tuple(wheels.get(p, {}).values()), tuple(sources.get(p, {}).values()))
        for p in set(wheels) | set(sources)
    }


def read_conda_lock(
    path: Path, categories: Sequence[str], *, ignore_non_wheels: bool = False
) -> CondaLockSource:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        packages = document["package"]
        lock_platforms = list(document["metadata"]["platforms"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise LockfileError(f"cannot read the conda-lock file {path}: {e}") from e
    wanted = set(categories)
    known = {str(p.get("category", "main")) for p in packages}
    unknown = wanted - known
    if unknown:
        raise LockfileError(
            f"{path} has no category {', '.join(sorted(unknown))}; "
            f"it has: {', '.join(sorted(known))}"
        )
    chosen = {
        (str(p["platform"]), str(p["url"]).rsplit("/", 1)[-1])
        for p in packages
        if p.get("manager", "conda") == "conda" and str(p.get("category", "main")) in wanted
    }
    pip = pip_packages(path, [p for p in packages if str(p.get("category", "main")) in wanted])
    lock = load_lockfile(path)
    env = lock.default_environment()
    if env is None:
        raise LockfileError(f"{path} holds no environment")
    by_platform = {}
    for platform in env.platforms():
        records = env.conda_repodata_records_for_platform(platform) or []
        selected = tuple(r for r in records if (platform.name, r.file_name) in chosen)
        wheels, sources = pip.get(platform.name, ((), ()))
        skipped: tuple[str, ...] = ()
        if ignore_non_wheels:
            skipped, sources = tuple(sorted({str(s) for s in sources})), ()
        by_platform[platform.name] = PlatformEnvironment(
            "default", platform.name, selected, wheels, skipped, sources
        )
    return CondaLockSource(path, tuple(sorted(str(p) for p in lock_platforms)), by_platform)
