"""The environment's python: where its interpreter is and where its packages go.

Both ``.pyc`` compilation and wheel installation ask here, so they agree on it.
"""

from __future__ import annotations

from pathlib import Path

from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest, PackageInfo


class NoPython(InstallError):
    pass


def python_package(manifest: Manifest) -> PackageInfo | None:
    return next((p for p in manifest.packages if p.name == "python"), None)


def python_path(prefix: Path, manifest: Manifest) -> Path:
    """Where the environment's interpreter is (``bin/python3.11`` rather than ``bin/python``:
    a shebang then names the version its scripts were installed for)."""
    if manifest.platform.startswith("win-"):
        return prefix / "python.exe"
    python = python_package(manifest)
    if python is not None:
        versioned = prefix / "bin" / f"python{_major_minor(python)}"
        if versioned.exists():
            return versioned
    return prefix / "bin" / "python"


def find_python(prefix: Path, manifest: Manifest) -> Path | None:
    """The environment's interpreter, if it has one."""
    path = python_path(prefix, manifest)
    return path if path.exists() else None


def install_scheme(prefix: Path, manifest: Manifest) -> dict[str, str]:
    """The install scheme of the environment's python (from its locked package)."""
    python = python_package(manifest)
    if python is None:
        raise NoPython(
            "the installer carries PyPI wheels but its environment has no python package"
        )
    windows = manifest.platform.startswith("win-")
    custom = python.record.get("python_site_packages_path")
    if custom:
        site = prefix / str(custom)
    elif windows:
        site = prefix / "Lib" / "site-packages"
    else:
        site = prefix / "lib" / f"python{_major_minor(python)}" / "site-packages"
    return {
        "purelib": str(site),
        "platlib": str(site),
        "headers": str(prefix / "include"),
        "scripts": str(prefix / ("Scripts" if windows else "bin")),
        "data": str(prefix),
    }


def _major_minor(python: PackageInfo) -> str:
    return ".".join(python.version.split(".")[:2])
