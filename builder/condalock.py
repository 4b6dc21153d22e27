"""A ``conda-lock.yml`` (version 1) as a :class:`~lockship.builder.sources.Source`: the
packages of the chosen categories, per platform."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml
from lockship.builder.errors import LockfileError
from lockship.builder.lockfile import load_lockfile
from lockship.builder.sources import PlatformEnvironment, records_for


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


def read_conda_lock(path: Path, categories: Sequence[str]) -> CondaLockSource:
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
    pip = sorted(
        str(p["name"])
        for p in packages
        if p.get("manager") == "pip" and str(p.get("category", "main")) in wanted
    )
    if pip:
        raise LockfileError(
            f"{path} holds pip packages lockship cannot ship from conda-lock files: "
            f"{', '.join(pip)}"
        )
    lock = load_lockfile(path)
    env = lock.default_environment()
    if env is None:
        raise LockfileError(f"{path} holds no environment")
    by_platform = {}
    for platform in env.platforms():
        records = env.conda_repodata_records_for_platform(platform) or []
        selected = tuple(r for r in records if (platform.name, r.file_name) in chosen)
        by_platform[platform.name] = PlatformEnvironment("default", platform.name, selected)
    return CondaLockSource(path, tuple(sorted(str(p) for p in lock_platforms)), by_platform)
