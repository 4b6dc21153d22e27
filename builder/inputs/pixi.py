"""A ``pixi.lock`` environment as a :class:`~lockship.builder.inputs.model.Source`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lockship.builder.inputs.lockfile import (
    find_lockfile,
    load_lockfile,
    read_locked_environment,
    read_workspace,
)
from lockship.builder.inputs.model import PlatformEnvironment
from rattler import LockFile


@dataclass(frozen=True)
class PixiSource:
    """An environment of a ``pixi.lock``, parsed once for every platform."""

    kind: ClassVar[str] = "pixi"
    path: Path
    environment: str
    lock: LockFile
    name: str | None = None
    version: str | None = None
    ignore_non_wheels: bool = False
    solved_lock: None = None
    #: the pixi.toml or pyproject.toml that gave name and version
    workspace_file: Path | None = None

    def platforms(self) -> tuple[str, ...]:
        env = self.lock.environment(self.environment)
        return tuple(sorted(p.name for p in env.platforms())) if env else ()

    def for_platform(self, platform: str) -> PlatformEnvironment:
        return read_locked_environment(
            self.path,
            self.environment,
            platform,
            ignore_non_wheels=self.ignore_non_wheels,
            lock=self.lock,
        )


def read_pixi(path: Path, environment: str, *, ignore_non_wheels: bool = False) -> PixiSource:
    lock_path = find_lockfile(path)
    workspace = read_workspace(lock_path)
    return PixiSource(
        lock_path,
        environment,
        load_lockfile(lock_path),  # fails early on an unreadable file
        workspace.name,
        workspace.version,
        ignore_non_wheels=ignore_non_wheels,
        workspace_file=workspace.path,
    )
