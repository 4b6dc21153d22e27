"""PyPI wheels carried in the payload, installed offline into the environment's site-packages
with pypa/installer (console scripts get the environment's interpreter in their shebang)."""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from lockship.stub.errors import InstallError
from lockship.stub.manifest import Manifest
from lockship.stub.payload import Payload, copy_entry
from lockship.stub.progress import Reporter


class WheelError(InstallError):
    pass


def python_layout(prefix: Path, manifest: Manifest) -> dict[str, str]:
    """The install scheme of the environment's python (from its locked package)."""
    python = next((p for p in manifest.packages if p.name == "python"), None)
    if python is None:
        raise WheelError(
            "the installer carries PyPI wheels but its environment has no python package"
        )
    windows = manifest.platform.startswith("win-")
    custom = python.record.get("python_site_packages_path")
    if custom:
        site = prefix / str(custom)
    elif windows:
        site = prefix / "Lib" / "site-packages"
    else:
        major_minor = ".".join(python.version.split(".")[:2])
        site = prefix / "lib" / f"python{major_minor}" / "site-packages"
    scripts = prefix / ("Scripts" if windows else "bin")
    return {
        "purelib": str(site),
        "platlib": str(site),
        "headers": str(prefix / "include"),
        "scripts": str(scripts),
        "data": str(prefix),
    }


def interpreter(prefix: Path, manifest: Manifest) -> str:
    if manifest.platform.startswith("win-"):
        return str(prefix / "python.exe")
    python = next(p for p in manifest.packages if p.name == "python")
    major_minor = ".".join(python.version.split(".")[:2])
    candidate = prefix / "bin" / f"python{major_minor}"
    return str(candidate if candidate.exists() else prefix / "bin" / "python")


def install_wheels(
    payload: Payload, manifest: Manifest, prefix: Path, stage: Path, reporter: Reporter
) -> list[Path]:
    """Install every wheel entry; return the .py files written (for .pyc compilation)."""
    entries = list(manifest.options.wheels)
    if not entries:
        return []
    scheme = python_layout(prefix, manifest)
    windows = manifest.platform.startswith("win-")
    destination = SchemeDictionaryDestination(
        scheme,
        interpreter=interpreter(prefix, manifest),
        script_kind="win-amd64" if windows else "posix",
    )
    stage.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    reporter.start("Installing wheels", len(entries), unit="wheel")
    for name in entries:
        target = stage / PurePosixPath(name).name
        copy_entry(payload, payload.entry(name), target)
        try:
            with WheelFile.open(target) as source:
                install(source, destination, {"INSTALLER": b"lockship\n"})
                dist_info = source.dist_info_dir
        except Exception as e:  # installer raises plain errors for broken wheels
            raise WheelError(f"installing the wheel {target.name} failed: {e}") from e
        site = Path(scheme["purelib"])
        with open(site / dist_info / "RECORD", newline="", encoding="utf-8") as f:
            written.extend(site / row[0] for row in csv.reader(f) if row[0].endswith(".py"))
        reporter.advance(1)
    reporter.finish()
    _record(prefix, entries)
    return written


def _record(prefix: Path, entries: list[str]) -> None:
    (prefix / "conda-meta" / "lockship-wheels").write_text(
        json.dumps(sorted(PurePosixPath(e).name for e in entries)) + "\n", encoding="utf-8"
    )
