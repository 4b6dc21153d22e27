"""PyPI wheels carried in the payload, installed offline into the environment's site-packages
with pypa/installer (console scripts get the environment's interpreter in their shebang), and
removed again by their RECORD when an update drops or replaces them.

``conda-meta/lockship-wheels`` lists what lockship installed: each wheel file's sha256 and its
``.dist-info`` folder (relative to the prefix), so an update finds the previous set even when
the environment's python, and with it site-packages, changed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from lockship.stub.errors import InstallError
from lockship.stub.interpreter import install_scheme, python_path
from lockship.stub.shared.boundary import write_text_atomically
from lockship.stub.shared.manifest import Manifest

#: the list of installed wheels, beside the conda records (no .json: it is not one)
WHEELS_RECORD = Path("conda-meta") / "lockship-wheels"


class WheelError(InstallError):
    pass


@dataclass(frozen=True)
class InstalledWheel:
    """A wheel lockship installed into a prefix."""

    file_name: str
    sha256: str
    #: its .dist-info folder, relative to the prefix (POSIX separators)
    dist_info: str


def install_wheel(
    wheel: Path, sha256: str, prefix: Path, manifest: Manifest, *, interpreter: str | None = None
) -> InstalledWheel:
    """Install the wheel file ``wheel`` (whose sha256 is ``sha256``); console scripts run
    ``interpreter`` (default: the prefix's python)."""
    scheme = install_scheme(prefix, manifest)
    destination = SchemeDictionaryDestination(
        scheme,
        interpreter=interpreter or str(python_path(prefix, manifest)),
        script_kind="win-amd64" if manifest.platform.startswith("win-") else "posix",
    )
    try:
        with WheelFile.open(wheel) as source:
            install(source, destination, {"INSTALLER": b"lockship\n"})
            dist_info = source.dist_info_dir
    except Exception as e:  # installer raises plain errors for broken wheels
        raise WheelError(f"installing the wheel {wheel.name} failed: {e}") from e
    folder = Path(scheme["purelib"]) / dist_info
    return InstalledWheel(wheel.name, sha256, folder.relative_to(prefix).as_posix())


def python_files(prefix: Path, wheel: InstalledWheel) -> list[Path]:
    """The .py files a wheel installed (for .pyc compilation)."""
    return [p for p in _recorded(prefix, wheel) if p.suffix == ".py"]


def read_wheels(prefix: Path) -> dict[str, InstalledWheel]:
    """The wheels an earlier install put into ``prefix``, by file name."""
    try:
        data = json.loads((prefix / WHEELS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    items = data.get("wheels", []) if isinstance(data, dict) else []
    wheels = {}
    for item in items:
        if isinstance(item, dict):
            found = InstalledWheel(
                str(item.get("file_name")), str(item.get("sha256")), str(item.get("dist_info"))
            )
            wheels[found.file_name] = found
    return wheels


def record_wheels(prefix: Path, wheels: Iterable[InstalledWheel]) -> None:
    listed = [asdict(w) for w in sorted(wheels, key=lambda w: w.file_name)]
    text = json.dumps({"wheels": listed}, indent=2, sort_keys=True) + "\n"
    write_text_atomically(prefix / WHEELS_RECORD, text)


def remove_wheel(prefix: Path, wheel: InstalledWheel) -> None:
    """Remove every file the wheel's RECORD lists (console scripts too), their .pyc files,
    and the folders that are left empty."""
    files = _recorded(prefix, wheel)
    folders: set[Path] = set()
    for path in files:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
        if path.suffix == ".py":
            cache = path.parent / "__pycache__"
            for compiled in cache.glob(f"{path.stem}.*.pyc"):
                compiled.unlink(missing_ok=True)
            folders.add(cache)
    dist_info = prefix / PurePosixPath(wheel.dist_info)
    folders.add(dist_info)
    # never the environment's own folders, even should a wheel leave them empty
    stops = {prefix, dist_info.parent, prefix / "bin", prefix / "Scripts"}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        _remove_empty(folder, stops)


def _recorded(prefix: Path, wheel: InstalledWheel) -> list[Path]:
    """The files in a wheel's RECORD, resolved; any that would lie outside the prefix is an
    error (a RECORD is data, not instructions)."""
    dist_info = prefix / PurePosixPath(wheel.dist_info)
    site = dist_info.parent
    try:
        with open(dist_info / "RECORD", newline="", encoding="utf-8") as f:
            rows = [row[0] for row in csv.reader(f) if row]
    except FileNotFoundError:
        return []
    root = prefix.resolve()
    files = []
    for row in rows:
        path = Path(_normalized(site / row))
        if not path.resolve().is_relative_to(root):
            raise WheelError(f"the RECORD of {wheel.file_name} names {row}, outside {prefix}")
        files.append(path)
    return files


def _normalized(path: Path) -> str:
    return os.path.normpath(path)


def _remove_empty(folder: Path, stops: set[Path]) -> None:
    """Remove ``folder`` and its parents while they are empty, up to (not) any of ``stops``."""
    prefix = min(stops, key=lambda p: len(p.parts))
    while folder not in stops and folder.is_relative_to(prefix):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
