"""Which wheels fit a target: its locked python and its conda platform, by the wheels' tags.

A wheel is shipped only when one of its tags is among the tags an installer's python on the
target supports (``packaging.tags``, computed for the target, not for this machine). Linux
targets accept any manylinux level (the lock's ``__glibc`` requirement is checked by the
installer), macOS targets any macOS version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path

from lockship.builder.errors import BuildError
from lockship.builder.inputs.model import LockedWheel, PlatformEnvironment
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from rattler import RepoDataRecord

#: conda platform -> (kind, machine as wheel tags spell it)
_MACHINES = {
    "linux-64": ("linux", "x86_64"),
    "linux-aarch64": ("linux", "aarch64"),
    "linux-ppc64le": ("linux", "ppc64le"),
    "linux-s390x": ("linux", "s390x"),
    "linux-32": ("linux", "i686"),
    "linux-armv7l": ("linux", "armv7l"),
    "osx-64": ("macos", "x86_64"),
    "osx-arm64": ("macos", "arm64"),
    "win-64": ("windows", "win_amd64"),
    "win-32": ("windows", "win32"),
    "win-arm64": ("windows", "win_arm64"),
}


def platform_tags(platform: str) -> list[str]:
    """The wheel platform tags a conda platform's python accepts, most specific first."""
    kind, machine = _MACHINES.get(platform, ("", ""))
    if kind == "linux":
        levels = [f"manylinux_2_{minor}_{machine}" for minor in range(60, 4, -1)]
        legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
        return [*levels, *(f"{name}_{machine}" for name in legacy), f"linux_{machine}"]
    if kind == "macos":
        return list(mac_platforms((30, 0), machine))
    if kind == "windows":
        return [machine]
    return []


@cache
def supported_tags(python: tuple[int, int], platform: str) -> frozenset[Tag]:
    platforms = platform_tags(platform)
    interpreter = f"cp{python[0]}{python[1]}"
    return frozenset(
        [
            *cpython_tags(python, [interpreter], platforms),
            *compatible_tags(python, interpreter, platforms),
        ]
    )


def wheel_tags(file_name: str) -> frozenset[Tag]:
    try:
        return parse_wheel_filename(file_name)[3]
    except InvalidWheelFilename as e:
        raise BuildError(f"{file_name} is not a valid wheel file name: {e}") from e


def is_pure(file_name: str) -> bool:
    """True for a wheel any platform can install (``py3-none-any`` and the like)."""
    return all(tag.platform == "any" for tag in wheel_tags(file_name))


def fits(file_name: str, python: tuple[int, int] | None, platform: str) -> bool:
    """Whether the wheel installs on ``platform`` into ``python`` (any python 3 if None)."""
    tags = wheel_tags(file_name)
    if python is None:
        return any(t.platform == "any" or t.platform in platform_tags(platform) for t in tags)
    return not tags.isdisjoint(supported_tags(python, platform))


def locked_python(records: Iterable[RepoDataRecord]) -> tuple[int, int] | None:
    """(major, minor) of the environment's python, None if it locks none."""
    for record in records:
        if record.name.normalized == "python":
            match = re.match(r"(\d+)\.(\d+)", str(record.version))
            if match:
                return int(match[1]), int(match[2])
    return None


def describe_python(python: tuple[int, int] | None) -> str:
    return f"python {python[0]}.{python[1]}" if python else "python 3"


def check_wheel_tags(
    file_names: Sequence[str], records: Sequence[RepoDataRecord], platform: str
) -> None:
    """Refuse, naming every one, the wheels that do not fit the target's python and platform."""
    python = locked_python(records)
    if file_names and python is None:
        raise BuildError(
            f"the environment for {platform} holds PyPI wheels but locks no python to install "
            "them into; add python to the environment"
        )
    wrong = sorted({name for name in file_names if not fits(name, python, platform)})
    if wrong:
        raise BuildError(
            f"PyPI wheels that do not fit {describe_python(python)} on {platform}: "
            f"{', '.join(wrong)}; lock wheels for that python and platform, or pass fitting "
            "ones with --inject"
        )


def inject_wheels(paths: Sequence[Path], environment: PlatformEnvironment) -> PlatformEnvironment:
    """Wheels given with ``--inject`` replace the locked PyPI package of their name, for the
    platforms (and python) they fit; other platforms keep what the lock says."""
    python = locked_python(environment.records)
    wheels, sources = list(environment.wheels), list(environment.sources)
    for path in paths:
        if not path.is_file():
            raise BuildError(f"--inject {path}: no such file")
        if not fits(path.name, python, environment.platform):
            continue
        name, version, _, _ = parse_wheel_filename(path.name)
        locked = {canonicalize_name(w.name) for w in wheels} | {
            canonicalize_name(s.name) for s in sources
        }
        if name not in locked:
            raise BuildError(
                f"--inject {path.name}: the lock holds no PyPI package {name} for "
                f"{environment.platform}; add it to the lock first"
            )
        wheels = [w for w in wheels if canonicalize_name(w.name) != name]
        sources = [s for s in sources if canonicalize_name(s.name) != name]
        wheels.append(LockedWheel(str(name), str(version), path.resolve().as_uri(), None))
    return replace(environment, wheels=tuple(wheels), sources=tuple(sources))
