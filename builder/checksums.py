"""``SHA256SUMS`` in the output folder, in the format ``sha256sum -c`` checks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from builder.fetch import hash_file

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


def update_checksums(folder: Path, installers: Iterable[Path]) -> Path | None:
    """Add or replace the installers' lines; other lines are kept. Written atomically."""
    installers = list(installers)
    if not installers:
        return None
    path = folder / FILE_NAME
    sums = read_checksums(path)
    for installer in installers:
        sums[installer.name] = hash_file(installer)[0]
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}.part")
    partial.write_text("".join(f"{sums[n]}  {n}\n" for n in sorted(sums)), encoding="utf-8")
    partial.replace(path)
    return path
