"""PyPI wheels carried in the payload, installed offline into the environment's site-packages
with pypa/installer (console scripts get the environment's interpreter in their shebang)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from lockship.stub.errors import InstallError
from lockship.stub.interpreter import install_scheme, python_path
from lockship.stub.manifest import Manifest

#: the list of installed wheels, beside the conda records (no .json: it is not one)
WHEELS_RECORD = Path("conda-meta") / "lockship-wheels"


class WheelError(InstallError):
    pass


def install_wheel(wheel: Path, prefix: Path, manifest: Manifest) -> list[Path]:
    """Install the wheel file ``wheel``; return the .py files written (for .pyc compilation)."""
    scheme = install_scheme(prefix, manifest)
    destination = SchemeDictionaryDestination(
        scheme,
        interpreter=str(python_path(prefix, manifest)),
        script_kind="win-amd64" if manifest.platform.startswith("win-") else "posix",
    )
    try:
        with WheelFile.open(wheel) as source:
            install(source, destination, {"INSTALLER": b"lockship\n"})
            dist_info = source.dist_info_dir
    except Exception as e:  # installer raises plain errors for broken wheels
        raise WheelError(f"installing the wheel {wheel.name} failed: {e}") from e
    site = Path(scheme["purelib"])
    with open(site / dist_info / "RECORD", newline="", encoding="utf-8") as f:
        return [site / row[0] for row in csv.reader(f) if row[0].endswith(".py")]


def record_wheels(prefix: Path, entries: Sequence[str]) -> None:
    (prefix / WHEELS_RECORD).write_text(
        json.dumps(sorted(PurePosixPath(e).name for e in entries)) + "\n", encoding="utf-8"
    )
