"""``SHA256SUMS`` in the output folder, in the format ``sha256sum -c`` checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FILE_NAME = "SHA256SUMS"


def read_checksums(path: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    if not path.is_file():
        return sums
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name:
            sums[name.lstrip("*")] = digest
    return sums


def update_checksums(folder: Path, installers: Mapping[Path, str]) -> Path | None:
    """Add or replace the installers' lines (path -> sha256, hashed while they were written);
    other lines are kept. Written atomically."""
    if not installers:
        return None
    path = folder / FILE_NAME
    sums = read_checksums(path)
    for installer, sha256 in installers.items():
        sums[installer.name] = sha256
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}.part")
    # "\n" on every OS: the file is published and checked with sha256sum on any machine
    lines = "".join(f"{sums[n]}  {n}\n" for n in sorted(sums))
    partial.write_text(lines, encoding="utf-8", newline="\n")
    partial.replace(path)
    return path
