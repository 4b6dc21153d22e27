"""What every input kind gives the build: a :class:`Source` of locked records per platform."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Protocol

from lockship.builder.errors import LockfileError
from lockship.builder.inputs.lockfile import PlatformEnvironment

# PlatformEnvironment lives beside the lock reader, which returns it; inputs take it from here
__all__ = ["PlatformEnvironment", "Source", "records_for"]


class Source(Protocol):
    """A described environment: the platforms it covers and, per platform, its records."""

    #: what kind of input this is, for people (``--dry-run``); never switched on
    kind: ClassVar[str]

    @property
    def path(self) -> Path | None:
        """The file the source was read from (relative wheel paths start at its folder)."""

    @property
    def environment(self) -> str: ...

    @property
    def name(self) -> str | None:
        """The installer's default name, if the input names one."""

    @property
    def version(self) -> str | None: ...

    @property
    def solved_lock(self) -> Path | None:
        """A lock lockship wrote for this source (carried in the payload), if any."""

    def platforms(self) -> tuple[str, ...]: ...

    def for_platform(self, platform: str) -> PlatformEnvironment: ...


def records_for(
    by_platform: Mapping[str, PlatformEnvironment], platform: str, what: str
) -> PlatformEnvironment:
    """``by_platform[platform]``, or the error naming the platforms ``what`` covers."""
    if platform not in by_platform:
        covered = ", ".join(sorted(by_platform)) or "no platform"
        raise LockfileError(f"{what} do not cover {platform}; they cover: {covered}")
    return by_platform[platform]
