"""Read a pixi.lock: the locked conda packages and PyPI packages of one environment and
platform, with rattler, and the workspace (name, version) beside it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from lockship.builder.errors import LockfileError
from lockship.builder.inputs.model import (
    LockedSource,
    LockedWheel,
    PlatformEnvironment,
    locked_pypi_package,
)
from rattler import (
    CondaLockedBinaryPackage,
    LockFile,
    LockPlatform,
    PypiLockedPackage,
)

LOCK_NAMES = ("pixi.lock",)


@dataclass(frozen=True)
class Workspace:
    name: str | None
    version: str | None
    #: the file they were read from
    path: Path | None = None


def find_lockfile(path: Path) -> Path:
    """``path`` itself if it is a file, else the lockfile inside the folder ``path``."""
    if path.is_dir():
        for name in LOCK_NAMES:
            if (path / name).is_file():
                return path / name
        raise LockfileError(
            f"no pixi.lock in {path}; pass the lockfile's path, or run `pixi lock` there first"
        )
    if not path.exists():
        raise LockfileError(f"the lockfile {path} does not exist")
    return path


def load_lockfile(path: Path) -> LockFile:
    try:
        return LockFile.from_path(path)
    except Exception as e:  # rattler's parse errors derive from Exception only
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LockfileError(f"cannot read the lockfile {path}: {first}") from e


def read_locked_environment(
    path: Path,
    environment: str,
    platform: str,
    *,
    ignore_non_wheels: bool = False,
    lock: LockFile | None = None,
) -> PlatformEnvironment:
    """The conda records locked for (environment, platform); raise for anything unsupported.

    ``lock`` is ``path`` already parsed, so callers reading several platforms parse it once.
    """
    lock = lock or load_lockfile(path)
    env = lock.environment(environment)
    if env is None:
        names = ", ".join(sorted(name for name, _ in lock.environments())) or "none"
        raise LockfileError(
            f"the lockfile {path} has no environment {environment!r}; "
            f"it has: {names} (choose one with -e)"
        )
    platforms = {p.name: p for p in env.platforms()}
    if platform not in platforms:
        raise LockfileError(
            f"environment {environment!r} is not locked for {platform}; "
            f"it is locked for: {', '.join(sorted(platforms)) or 'no platform'} "
            "(choose one with -p, or add the platform to the workspace and run `pixi lock`)"
        )
    lock_platform: LockPlatform = platforms[platform]
    unsupported: list[str] = []
    wheels: list[LockedWheel] = []
    sources: list[LockedSource] = []
    for package in env.packages(lock_platform) or []:
        if isinstance(package, PypiLockedPackage):
            sha = _pypi_sha256(package)
            locked = locked_pypi_package(
                str(package.name),
                str(package.version),
                str(package.location),
                sha.hex() if isinstance(sha, bytes) else (str(sha) if sha else None),
            )
            if isinstance(locked, LockedWheel):
                wheels.append(locked)
            else:
                sources.append(locked)
        elif not isinstance(package, CondaLockedBinaryPackage):
            unsupported.append(f"{package.name} (conda source package)")
    if unsupported:
        raise LockfileError(
            f"environment {environment!r} on {platform} holds packages lockship cannot ship: "
            f"{', '.join(sorted(set(unsupported)))}; build them into binary packages first"
        )
    skipped: tuple[str, ...] = ()
    if ignore_non_wheels:  # the old behaviour: leave them out, with a warning
        skipped, sources = tuple(sorted({str(s) for s in sources})), []
    records = env.conda_repodata_records_for_platform(lock_platform) or []
    return PlatformEnvironment(
        environment,
        platform,
        tuple(records),
        tuple(wheels),
        skipped,
        tuple(sources),
        tuple(str(v) for v in lock_platform.virtual_packages),
    )


def read_workspace(lock_path: Path) -> Workspace:
    """Name and version from pixi.toml or pyproject.toml next to the lockfile, if present."""
    folder = lock_path.parent
    for name, tables in (
        ("pixi.toml", (("workspace",), ("project",))),
        (
            "pyproject.toml",
            (("tool", "pixi", "workspace"), ("tool", "pixi", "project"), ("project",)),
        ),
    ):
        manifest = folder / name
        if not manifest.is_file():
            continue
        try:
            data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for keys in tables:
            table: object = data
            for key in keys:
                table = table.get(key) if isinstance(table, dict) else None
            if isinstance(table, dict) and ("name" in table or "version" in table):
                name_value, version_value = table.get("name"), table.get("version")
                return Workspace(
                    str(name_value) if name_value else None,
                    str(version_value) if version_value else None,
                    manifest,
                )
    return Workspace(None, None)


def _pypi_sha256(package: PypiLockedPackage) -> bytes | str | None:
    """The locked sha256 of a PyPI package; rattler's hash wrapper raises when there is none."""
    try:
        hashes = package.hashes
        return hashes.sha256 if hashes is not None else None
    except AttributeError:
        return None
