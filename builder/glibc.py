"""The environment's glibc floor: the oldest C library the locked environment says it runs on.

An installer must not need a newer glibc than its environment does, or it refuses machines the
environment itself would run on. The floor comes from, in this order: the lock's platform
virtual packages (lockfile v7: ``__glibc=2.28``), pixi's ``[system-requirements]`` beside the
lock (``libc = "2.28"``, ``libc = { family = "glibc", version = "2.28" }``), the packages'
``__glibc >=X`` dependencies (the newest X), else pixi's default, 2.28.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lockship.builder.errors import StubError
from lockship.builder.stubs.elf import parse_version

#: what pixi solves a linux platform for when nothing says otherwise
PIXI_DEFAULT_GLIBC = "2.28"
_VIRTUAL = re.compile(r"^__glibc\s*[= ]\s*(\d+(?:\.\d+)+)")
_DEPENDS = re.compile(r"^__glibc\s*>=?\s*(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class GlibcFloor:
    version: str
    #: where it comes from, for messages: "pixi.lock's virtual packages", "pixi's default" ...
    origin: str


def environment_floor(
    platform: str,
    virtual_packages: Iterable[str],
    depends: Iterable[str],
    workspace: Path | None,
) -> GlibcFloor | None:
    """The glibc floor of an environment for ``platform`` (None for non-Linux platforms)."""
    if not platform.startswith("linux-"):
        return None
    for package in virtual_packages:
        match = _VIRTUAL.match(package)
        if match:
            return GlibcFloor(match.group(1), "the lock's virtual packages")
    if workspace is not None:
        required = _system_requirement(workspace)
        if required is not None:
            return required
    needed = [m.group(1) for d in depends if (m := _DEPENDS.match(d))]
    if needed:
        newest = max(needed, key=lambda v: parse_version(v) or ())
        return GlibcFloor(newest, "the packages' __glibc dependencies")
    return GlibcFloor(PIXI_DEFAULT_GLIBC, "pixi's default")


def _system_requirement(folder: Path) -> GlibcFloor | None:
    """``[system-requirements] libc`` in ``pixi.toml`` or ``pyproject.toml``'s ``tool.pixi``."""
    for name, keys in (("pixi.toml", ()), ("pyproject.toml", ("tool", "pixi"))):
        try:
            data: object = tomllib.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for key in (*keys, "system-requirements"):
            data = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            continue
        libc = data.get("libc", data.get("glibc"))
        if isinstance(libc, dict) and libc.get("family", "glibc") == "glibc":
            libc = libc.get("version")
        if isinstance(libc, str | int | float) and parse_version(str(libc)):
            return GlibcFloor(str(libc), f"{name}'s system-requirements")
    return None


def check_stub_glibc(
    platform: str,
    stub: Path,
    needs: str | None,
    floor: GlibcFloor | None,
    *,
    allow_newer: bool,
) -> None:
    """StubError if the stub needs a newer glibc than the environment's floor."""
    if needs is None or floor is None or allow_newer:
        return
    if (parse_version(needs) or ()) <= (parse_version(floor.version) or ()):
        return
    raise StubError(
        f"the {platform} stub {stub} needs glibc >= {needs}, but the environment runs on "
        f"glibc {floor.version} ({floor.origin}); build with the portable stub (leave out "
        f"--stub and --stub-dir, or lockship freeze-stub --portable) or pass "
        f"--allow-newer-glibc"
    )
