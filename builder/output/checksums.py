"""``SHA256SUMS`` in the output folder, in the format ``sha256sum -c`` checks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lockship.stub.shared.boundary import (
    SHA256SUMS,
    format_checksums,
    parse_checksums,
    write_text_atomically,
)

FILE_NAME = SHA256SUMS


def read_checksums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return parse_checksums(path.read_text(encoding="utf-8"))


def update_checksums(folder: Path, installers: Mapping[Path, str]) -> Path | None:
    """Add or replace the installers' lines (path -> sha256, hashed while they were written);
    other lines are kept. Written atomically."""
    if not installers:
        return None
    path = folder / FILE_NAME
    sums = read_checksums(path)
    for installer, sha256 in installers.items():
        sums[installer.name] = sha256
    write_text_atomically(path, format_checksums(sums))
    return path
