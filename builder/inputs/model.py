"""What every input kind gives the build: a :class:`Source` of locked records per platform, and
the locked PyPI packages (wheels, and sources to build) that pixi.lock and conda-lock share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol
from urllib.parse import unquote, urlparse, urlsplit

from lockship.builder.errors import LockfileError
from rattler import RepoDataRecord


@dataclass(frozen=True)
class LockedWheel:
    """A PyPI wheel locked in a pixi.lock."""

    name: str
    version: str
    location: str  # a URL, or a path relative to the lockfile's folder
    sha256: str | None

    @property
    def file_name(self) -> str:
        return url_file_name(self.location)


def url_file_name(location: str) -> str:
    """The file name a URL or a path ends in, as it is on disk: a URL's ``%2B`` is ``+`` (a
    PyTorch index serves every CUDA wheel so), its query string and fragment are dropped; a
    path is taken as written."""
    if urlsplit(location).scheme in ("http", "https", "file"):
        path = unquote(urlsplit(location).path)
    else:
        path = location.split("#", 1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


#: how a PyPI source that is not a wheel is locked
SourceKind = Literal["sdist", "path", "git"]


@dataclass(frozen=True)
class LockedSource:
    """A PyPI package locked as something to build: an sdist, a local project or a git URL."""

    name: str
    version: str
    location: str  # a URL, ``git+...`` URL, or a path relative to the lockfile's folder
    sha256: str | None
    kind: SourceKind

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.location})"


SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")


def locked_pypi_package(
    name: str, version: str, location: str, sha256: str | None
) -> LockedWheel | LockedSource:
    """A locked PyPI package, told apart by its location: a wheel, an sdist, git, or a path."""
    if location.startswith("git+"):
        return LockedSource(name, version, location, sha256, "git")
    bare = url_file_name(location)
    if bare.endswith(".whl"):
        return LockedWheel(name, version, location, sha256)
    kind: SourceKind = "sdist" if bare.lower().endswith(SDIST_SUFFIXES) else "path"
    return LockedSource(name, version, location, sha256, kind)


def location_url(location: str, base: Path) -> str:
    """A URL for a locked PyPI location; local and relative paths resolve against ``base``
    (the lock's folder)."""
    bare = location.split("#", 1)[0]
    if urlparse(bare).scheme in ("http", "https", "file"):
        return bare
    path = Path(bare)
    return (path if path.is_absolute() else (base / path)).resolve().as_uri()


@dataclass(frozen=True)
class PlatformEnvironment:
    """What one installer ships: conda records (and PyPI wheels) for one platform."""

    environment: str
    platform: str
    records: tuple[RepoDataRecord, ...]
    wheels: tuple[LockedWheel, ...] = ()
    #: locked PyPI packages left out because they are not wheels (``--ignore-pypi-non-wheel``)
    skipped: tuple[str, ...] = ()
    #: locked PyPI packages that are not wheels: built into wheels at build time
    sources: tuple[LockedSource, ...] = ()
    #: the platform's virtual packages as the lock records them (v7: ``__glibc=2.28``)
    virtual_packages: tuple[str, ...] = ()


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
