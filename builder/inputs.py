"""Every way users describe an environment, turned into locked records per platform.

Supported: ``pixi.lock`` (any version rattler reads), ``conda-lock.yml`` (v1, categories),
``@EXPLICIT`` files (``conda list --explicit --md5``), ``environment.yml`` and ``--spec``
(solved with rattler at build time; the solved lock is kept), plus ``--inject``ed archives.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml
from lockship.builder.errors import BuildError, ChecksumMismatch, FetchError, LockfileError
from lockship.builder.lockfile import (
    LockedWheel,
    find_lockfile,
    load_lockfile,
    read_locked_environment,
    read_workspace,
)
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
from rattler.explicit_environment import ExplicitEnvironmentSpec


@dataclass(frozen=True)
class PlatformEnvironment:
    """What one installer ships: conda records (and PyPI wheels) for one platform."""

    environment: str
    platform: str
    records: tuple[RepoDataRecord, ...]
    wheels: tuple[LockedWheel, ...] = ()


@dataclass
class Source:
    """A described environment, able to list its platforms and their records."""

    kind: str
    path: Path | None
    environment: str
    name: str | None = None
    version: str | None = None
    platforms: tuple[str, ...] = ()
    #: for solved inputs: the lock written by lockship, recorded in the payload
    solved_lock: Path | None = None
    _by_platform: dict[str, PlatformEnvironment] = field(default_factory=dict)
    _reader: object = None
    #: a pixi.lock, parsed once for every platform
    _lock: LockFile | None = None

    def for_platform(
        self, platform: str, *, ignore_non_wheels: bool = False
    ) -> PlatformEnvironment:
        if self.kind == "pixi" and self.path is not None:
            locked = read_locked_environment(
                self.path,
                self.environment,
                platform,
                ignore_non_wheels=ignore_non_wheels,
                lock=self._lock,
            )
            return PlatformEnvironment(self.environment, platform, locked.records, locked.wheels)
        if platform not in self._by_platform:
            locked_for = ", ".join(sorted(self._by_platform)) or "no platform"
            raise LockfileError(
                f"{self.path or 'the specs'} do not cover {platform}; they cover: {locked_for}"
            )
        return self._by_platform[platform]


def detect_kind(path: Path) -> str:
    """``pixi``, ``conda-lock``, ``explicit`` or ``environment``, from the file's contents."""
    if path.is_dir():
        return "pixi"
    try:
        head = path.read_bytes()[:65536].decode("utf-8", "replace")
    except OSError as e:
        raise LockfileError(f"cannot read {path}: {e.strerror or e}") from e
    if "@EXPLICIT" in head:
        return "explicit"
    if path.name.endswith(".lock") or (
        head.lstrip().startswith("version:") and ("environments:" in head or "packages:" in head)
    ):
        return "conda-lock" if "\nmetadata:" in head and "\npackage:" in head else "pixi"
    if "\nmetadata:" in head and "\npackage:" in head:
        return "conda-lock"
    if "dependencies:" in head:
        return "environment"
    return "pixi"


def open_source(
    path: Path,
    *,
    environment: str,
    categories: Sequence[str] = ("main",),
    client: Client | None = None,
    cache_dir: Path | None = None,
) -> Source:
    """Read a lock-like input (not yet per platform, except for inputs that need work)."""
    if not path.exists():
        raise LockfileError(f"the lockfile {path} does not exist")
    kind = detect_kind(path)
    if kind == "pixi":
        lock_path = find_lockfile(path)
        workspace = read_workspace(lock_path)
        lock = load_lockfile(lock_path)  # fails early on an unreadable file
        env = lock.environment(environment)
        return Source(
            "pixi",
            lock_path,
            environment,
            workspace.name,
            workspace.version,
            platforms=tuple(sorted(p.name for p in env.platforms())) if env else (),
            _lock=lock,
        )
    if kind == "conda-lock":
        return _conda_lock(path, categories)
    if kind == "explicit":
        return _explicit(path, client or Client(), cache_dir or path.parent)
    return _pending_solve(path, _environment_yml(path))


# --- conda-lock ----------------------------------------------------------------------------


def _conda_lock(path: Path, categories: Sequence[str]) -> Source:
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
    source = Source("conda-lock", path, "default", platforms=tuple(sorted(lock_platforms)))
    for platform in env.platforms():
        records = env.conda_repodata_records_for_platform(platform) or []
        selected = tuple(r for r in records if (platform.name, r.file_name) in chosen)
        source._by_platform[platform.name] = PlatformEnvironment("default", platform.name, selected)
    return source


# --- explicit files ------------------------------------------------------------------------


def _explicit(path: Path, client: Client, cache_dir: Path) -> Source:
    try:
        spec = ExplicitEnvironmentSpec.from_path(path)
    except Exception as e:  # rattler's own parse errors
        raise LockfileError(f"cannot read the explicit file {path}: {e}") from e
    platform = str(spec.platform) if spec.platform else None
    urls = [str(p.url) for p in spec.packages]
    if platform is None:
        subdirs = {u.rsplit("/", 2)[-2] for u in urls} - {"noarch"}
        if len(subdirs) != 1:
            raise LockfileError(f"{path} names no platform (add a '# platform: linux-64' line)")
        platform = subdirs.pop()
    records = asyncio.run(_explicit_records(urls, client, cache_dir / "explicit"))
    source = Source("explicit", path, "default", platforms=(platform,))
    source._by_platform[platform] = PlatformEnvironment("default", platform, tuple(records))
    return source


async def _explicit_records(urls: list[str], client: Client, folder: Path) -> list[RepoDataRecord]:
    """Explicit files carry only URLs (and a hash): read each record from its archive."""
    from lockship.builder.fetch import download_url

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for raw in urls:
        url, _, fragment = raw.partition("#")
        name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
        target = folder / hashlib.sha256(url.encode()).hexdigest()[:16] / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            await download_url(client, url, part)
            part.replace(target)
        digest = _file_digest(target, "sha256" if len(fragment) == 64 else "md5")
        if fragment and digest != fragment.removeprefix("sha256:"):
            target.unlink()
            raise ChecksumMismatch(name, fragment, digest)
        try:
            record = await RepoDataRecord.from_package_archive(target)
        except Exception as e:
            raise FetchError(url, f"not a conda package ({e})") from e
        record.url = url
        record.channel = url.rsplit("/", 2)[0]
        records.append(record)
    return records


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# --- specs and environment.yml -------------------------------------------------------------


@dataclass(frozen=True)
class SpecRequest:
    name: str | None
    channels: tuple[str, ...]
    specs: tuple[str, ...]


def _environment_yml(path: Path) -> SpecRequest:
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
    return SpecRequest(document.get("name"), channels, tuple(specs))


def _pending_solve(path: Path, spec: SpecRequest) -> Source:
    source = Source("environment", path, "default", name=spec.name)
    source._reader = spec
    return source


def spec_request(
    source: Source | None, specs: Sequence[str], channels: Sequence[str]
) -> SpecRequest:
    if source is not None and isinstance(source._reader, SpecRequest):
        request = source._reader
        return SpecRequest(
            request.name, tuple(channels) or request.channels, request.specs + tuple(specs)
        )
    return SpecRequest(None, tuple(channels), tuple(specs))


#: what a target machine is assumed to offer when solving for it (pixi's defaults)
DEFAULT_VIRTUAL_PACKAGES = {
    "linux": {"__unix": "0", "__linux": "4.18", "__glibc": "2.28"},
    "osx": {"__unix": "0", "__osx": "13.0"},
    "win": {"__win": "0"},
}


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
) -> Source:
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
    source = Source(
        "specs",
        lock_path,
        "default",
        name=request.name,
        platforms=tuple(platforms),
        solved_lock=lock_path,
    )
    lock_platforms = [LockPlatform(p) for p in platforms]
    lock = LockFile(lock_platforms)
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
        source._by_platform[platform] = PlatformEnvironment("default", platform, tuple(records))
    lock.set_channels("default", [LockChannel(c) for c in request.channels])
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    partial = lock_path.with_name(f".{lock_path.name}.part")
    lock.to_path(partial)
    partial.replace(lock_path)
    return source


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


# --- injected packages ---------------------------------------------------------------------


def inject_packages(paths: Sequence[Path], environment: PlatformEnvironment) -> PlatformEnvironment:
    """Add local archives to a platform's records after checking they fit."""
    if not paths:
        return environment
    records = list(environment.records)
    injected = []
    for path in paths:
        if not path.is_file() or not path.name.endswith((".conda", ".tar.bz2")):
            raise BuildError(f"--inject {path}: not a .conda or .tar.bz2 file")
        try:
            record = asyncio.run(RepoDataRecord.from_package_archive(path))
        except Exception as e:
            raise BuildError(f"--inject {path}: not a readable conda package ({e})") from e
        if str(record.subdir) not in (environment.platform, "noarch"):
            raise BuildError(
                f"--inject {path.name} is built for {record.subdir}, not {environment.platform} "
                "or noarch"
            )
        record.url = path.resolve().as_uri()
        record.channel = path.resolve().parent.as_uri()
        records = [r for r in records if r.name.normalized != record.name.normalized]
        injected.append(record)
    everything = records + injected
    for record in injected:
        for depends in record.depends:
            if depends.startswith("__"):
                continue
            spec = MatchSpec(depends)
            if not any(spec.matches(candidate) for candidate in everything):
                raise BuildError(
                    f"--inject {record.file_name} depends on {depends!r}, which no locked "
                    f"package for {environment.platform} satisfies; add it to the lock"
                )
    return PlatformEnvironment(
        environment.environment, environment.platform, tuple(everything), environment.wheels
    )
