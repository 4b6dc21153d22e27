"""Delta installers (``lockship build --delta-from OLD``): only what changed since OLD.

OLD is the previous version, as its lock (a pixi.lock or a folder holding one, any input
``lockship build`` reads) or as its installer file. An installer of the new version is planned
and fetched as usual, so its manifest lists the whole new environment; the payload then holds
only the conda archives and wheels that OLD does not have as the same file with the same
sha256, and the manifest's ``delta`` names OLD's packages and wheels, which the installer
requires in the prefix before it writes anything (``stub.delta``).

Why nothing else is needed: rattler's transaction diffs the prefix's records against the new
ones by name and content and never reads the archive of a package it keeps, and ``-u`` keeps a
wheel whose file and sha256 are unchanged. What is left out is decided by the very rules the
installer's update follows (``stub.manifest.kept_on_update`` and ``plan_wheels``), so the two
cannot drift apart: a ``noarch: python`` package, for one, is carried when python's
major.minor version changes, because rattler relinks it then.

OLD's version: an installer's manifest gives it; for a lock, ``--delta-version``, else the
workspace version (pixi.toml/pyproject.toml beside the lock), else the build fails saying
what to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from lockship.builder.errors import BuildError, UsageError
from lockship.builder.inputs.reader import InputOptions, open_input
from lockship.builder.inputs.specs import SpecRequest
from lockship.stub.shared.boundary import file_sha256
from lockship.stub.shared.manifest import (
    BaseFile,
    DeltaBase,
    LinkedPackage,
    Manifest,
    PackageInfo,
    kept_on_update,
    plan_wheels,
)
from lockship.stub.shared.payload import PayloadError, read_payload


@dataclass(frozen=True)
class OldEnvironment:
    """What the previous version shipped for one platform."""

    version: str
    packages: tuple[BaseFile, ...]
    wheels: tuple[BaseFile, ...]
    #: its conda packages as an update over them compares them (``kept_on_update``)
    linked: tuple[LinkedPackage, ...] = ()


def delta_file_name(name: str, version: str, platform: str, old_version: str) -> str:
    suffix = ".exe" if platform.startswith("win-") else ".sh"
    return f"{name}-{version}-{platform}-from-{old_version}{suffix}"


def read_old(
    path: Path, platform: str, *, name: str, version: str | None, options: InputOptions
) -> OldEnvironment:
    """OLD for ``platform``: from an installer file if ``path`` is one, else from a lock."""
    try:
        payload = read_payload(path) if path.is_file() else None
    except PayloadError:
        payload = None  # not an installer: a lockfile
    if payload is None:
        return _from_lock(path, platform, version=version, options=options)
    manifest = Manifest.from_dict(payload.metadata)
    if manifest.name != name:
        raise BuildError(
            f"--delta-from {path} is an installer of {manifest.name}, not {name}; pass an "
            f"earlier installer of {name}"
        )
    if manifest.platform != platform:
        raise BuildError(
            f"--delta-from {path} is an installer for {manifest.platform}; build the delta for "
            f"that platform (-p {manifest.platform}) or pass the lock instead"
        )
    if version is not None and version != manifest.version:
        raise UsageError(
            f"--delta-version {version} contradicts {path}, an installer of {name} "
            f"{manifest.version}; leave --delta-version out"
        )
    digests = {entry.name: entry.sha256 for entry in payload.entries}
    wheels = []
    for entry in manifest.options.wheels:
        file_name = PurePosixPath(entry).name
        sha256 = digests.get(entry)
        if sha256 is None and manifest.delta is not None:  # OLD is a delta itself
            sha256 = manifest.delta.wheel_sha256(file_name)
        wheels.append(BaseFile(_wheel_name(file_name), file_name, sha256))
    return OldEnvironment(
        version=manifest.version,
        packages=tuple(BaseFile(p.name, p.file_name, p.sha256) for p in manifest.packages),
        wheels=tuple(wheels),
        linked=tuple(LinkedPackage.of(p) for p in manifest.packages),
    )


def _from_lock(
    path: Path, platform: str, *, version: str | None, options: InputOptions
) -> OldEnvironment:
    source = open_input(path, options)
    if isinstance(source, SpecRequest):
        raise UsageError(
            f"--delta-from {path} is an environment.yml, which locks nothing; pass the "
            "previous pixi.lock or the previous installer"
        )
    old_version = version or source.version
    if old_version is None:
        raise UsageError(
            f"the version of --delta-from {path} is unknown (no workspace version beside it); "
            "pass --delta-version VERSION, or --delta-from the previous installer"
        )
    environment = source.for_platform(platform)
    records = environment.records
    return OldEnvironment(
        version=old_version,
        packages=tuple(
            BaseFile(r.name.normalized, r.file_name, r.sha256.hex() if r.sha256 else None)
            for r in records
        ),
        wheels=tuple(
            BaseFile(_wheel_name(w.file_name), w.file_name, w.sha256) for w in environment.wheels
        ),
        linked=tuple(LinkedPackage.of_record(r) for r in records),
    )


def _wheel_name(file_name: str) -> str:
    return file_name.split("-", 1)[0]


def delta_payload(
    old: OldEnvironment, manifest: Manifest, files: Sequence[tuple[str, Path]]
) -> tuple[Manifest, list[tuple[str, Path]]]:
    """The full installer's manifest and payload files made a delta from ``old``."""
    wheel_entries = set(manifest.options.wheels)
    wheels = [(entry, file_sha256(path)) for entry, path in files if entry in wheel_entries]
    delta = plan_delta(old, manifest.name, manifest.packages, wheels)
    return replace(manifest, delta=delta), [(e, p) for e, p in files if delta.carries(e)]


def plan_delta(
    old: OldEnvironment,
    name: str,
    packages: Sequence[PackageInfo],
    wheels: Sequence[tuple[str, str]],
) -> DeltaBase:
    """The delta manifest field for the new ``packages`` and ``wheels`` (payload entry,
    sha256): everything is carried except what the installer's update keeps of ``old``
    (the same rules: ``stub.manifest.kept_on_update`` and ``plan_wheels``)."""
    kept = kept_on_update(old.linked, packages)
    carried = [p.entry for p in packages if p.entry not in kept]
    previous = {w.file_name: w.sha256 for w in old.wheels}
    carried += plan_wheels(previous, wheels, force=False).install
    return DeltaBase(
        name=name,
        version=old.version,
        packages=old.packages,
        wheels=old.wheels,
        carried=tuple(carried),
    )
