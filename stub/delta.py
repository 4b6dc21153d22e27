"""The check a delta installer makes before it writes anything: the prefix must hold exactly
the environment it was built against (``Manifest.delta``).

A delta carries only what changed since its base, and links the new version by leaving the
rest where it is; over anything but that base it would produce an environment nobody built.
So the conda packages in ``conda-meta/*.json`` and the wheels in ``conda-meta/lockship-wheels``
must be the base's, file for file and sha256 for sha256, and the marker must name the same
environment. The marker's version is shown, not required: the packages are what matter.
"""

from __future__ import annotations

import json
from pathlib import Path

from lockship.stub.errors import InstallError
from lockship.stub.finish import read_marker
from lockship.stub.shared.manifest import BaseFile, DeltaBase, Manifest


class BaseMismatch(InstallError):
    """The prefix does not hold the environment a delta installer updates."""

    def __init__(self, manifest: Manifest, delta: DeltaBase, prefix: Path, found: str) -> None:
        self.found = found
        super().__init__(
            f"this update needs {delta.name} {delta.version} in {prefix}; {prefix} {found}; "
            f"install {manifest.name} {manifest.version} there with its full installer instead"
        )


def check_delta_base(prefix: Path, manifest: Manifest) -> None:
    """Raise :class:`BaseMismatch` unless ``prefix`` holds exactly the manifest's base."""
    delta = manifest.delta
    if delta is None:
        return
    if not prefix.exists():
        raise BaseMismatch(manifest, delta, prefix, "does not exist")
    if not prefix.is_dir() or not any(prefix.iterdir()):
        raise BaseMismatch(manifest, delta, prefix, "is empty")
    marker = read_marker(prefix)
    if marker is None:
        raise BaseMismatch(manifest, delta, prefix, "holds no environment made by lockship")
    held = f"holds {marker.get('name')} {marker.get('version')}"
    differ = len(differing(delta.packages, installed_packages(prefix)))
    differ += len(differing(delta.wheels, installed_wheels(prefix)))
    if differ:
        noun = "package differs" if differ == 1 else "packages differ"
        raise BaseMismatch(manifest, delta, prefix, f"{held} ({differ} {noun})")
    if marker.get("name") != delta.name:
        raise BaseMismatch(manifest, delta, prefix, held)


def differing(expected: tuple[BaseFile, ...], found: list[BaseFile]) -> set[str]:
    """Names of the packages that are in one list and not, as the same file, in the other.

    Files are compared by name and sha256, or by name alone where the base recorded none.
    """
    unhashed = {f.file_name for f in expected if f.sha256 is None}

    def key(f: BaseFile) -> tuple[str, str | None]:
        return (f.file_name, None if f.file_name in unhashed else f.sha256)

    wanted, present = {key(f) for f in expected}, {key(f) for f in found}
    return {f.name for f in expected if key(f) not in present} | {
        f.name for f in found if key(f) not in wanted
    }


def installed_packages(prefix: Path) -> list[BaseFile]:
    """The conda packages in ``prefix``, from their ``conda-meta`` records."""
    found = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict):
            record = {}
        name = str(record.get("name") or path.stem)
        file_name = str(record.get("fn") or path.name)
        sha256 = record.get("sha256")
        found.append(BaseFile(name, file_name, str(sha256) if sha256 else None))
    return found


def installed_wheels(prefix: Path) -> list[BaseFile]:
    """The wheels lockship installed into ``prefix`` (``conda-meta/lockship-wheels``)."""
    from lockship.stub.wheels import read_wheels

    return [
        BaseFile(file_name.split("-")[0], file_name, wheel.sha256)
        for file_name, wheel in read_wheels(prefix).items()
    ]
