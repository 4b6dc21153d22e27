"""Build settings kept beside the input: a ``[tool.lockship]`` table in ``pixi.toml`` or
``pyproject.toml``, or a ``lockship.toml`` (top-level keys, or its own ``[tool.lockship]``).

:func:`read_config` finds and validates the table; :func:`merge_settings` lays the command line
over it (an option given there wins; a repeatable one replaces the table's list) and records
where each effective value came from, for ``--dry-run``.
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lockship.builder.errors import UsageError
from lockship.builder.fetch import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_TIMEOUT
from lockship.builder.image.settings import (
    ImageSettings,
    image_flags,
    merge_image,
    read_image_table,
)
from lockship.builder.network import parse_mirror
from lockship.builder.paths import host_platform

#: the files searched, in the folder of the input, for build settings
CONFIG_FILES = ("lockship.toml", "pixi.toml", "pyproject.toml")
COMMAND_LINE = "command line"
DEFAULT = "default"


@dataclass(frozen=True)
class Settings:
    """The effective build settings; field ``output_dir`` is key ``output-dir`` in the table."""

    environment: str = "default"
    #: a tuple of platforms (empty: this machine's), or "all" the environment is locked for
    platforms: tuple[str, ...] | Literal["all"] = ()
    name: str | None = None
    version: str | None = None
    output_dir: Path = Path("installers")
    license: Path | None = None
    post_install: Path | None = None
    #: run post-link scripts (True/False), or only allow these packages to carry them
    link_scripts: bool | tuple[str, ...] = True
    no_pyc: bool = False
    #: the installer's default ``-p``; ``~`` and ``$VAR`` are expanded at install time
    default_prefix: str | None = None
    stubs: dict[str, Path] = field(default_factory=dict)
    stub_dir: Path | None = None
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    concurrency: int = DEFAULT_CONCURRENCY
    categories: tuple[str, ...] = ("main",)
    channels: tuple[str, ...] = ()
    specs: tuple[str, ...] = ()
    inject: tuple[Path, ...] = ()
    ignore_pypi_non_wheel: bool = False
    sign_command: str | None = None
    #: an OCI image of the environment (``--image``, ``[tool.lockship.image]``)
    image: ImageSettings | None = None
    #: table key -> where its value came from: "command line", the table's label, "default"
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def key_of(field_name: str) -> str:
    return field_name.replace("_", "-")


#: table key -> (what it holds, in words; how to read it from TOML given the file's folder)
Reader = Callable[[object, Path], Any]


def _str(value: object, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def _path(value: object, base: Path) -> Path:
    path = Path(_str(value, base)).expanduser()
    return path if path.is_absolute() else base / path


def _int(value: object, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _bool(value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _strs(value: object, base: Path) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(_str(v, base) for v in value)


def _paths(value: object, base: Path) -> tuple[Path, ...]:
    return tuple(_path(v, base) for v in _strs(value, base))


def _platforms(value: object, base: Path) -> tuple[str, ...] | Literal["all"]:
    return "all" if value == "all" else tuple(dict.fromkeys(_strs(value, base)))


def _link_scripts(value: object, base: Path) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    return tuple(sorted({n.lower() for n in _strs(value, base)}))


def _stubs(value: object, base: Path) -> dict[str, Path]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return {_str(k, base): _path(v, base) for k, v in value.items()}


def _mirrors(value: object, base: Path) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise TypeError(value)
    mirrors: dict[str, list[str]] = {}
    for original, targets in value.items():
        for target in [targets] if isinstance(targets, str) else _strs(targets, base):
            key, url = parse_mirror(f"{_str(original, base)}={_str(target, base)}")
            mirrors.setdefault(key, []).append(url)
    return mirrors


KEYS: dict[str, tuple[str, Reader]] = {
    "environment": ("a string", _str),
    "platforms": ('a list of platforms, or "all"', _platforms),
    "name": ("a string", _str),
    "version": ("a string", _str),
    "output-dir": ("a path (a string)", _path),
    "license": ("a path (a string)", _path),
    "post-install": ("a path (a string)", _path),
    "link-scripts": ("true, false or a list of package names", _link_scripts),
    "no-pyc": ("true or false", _bool),
    "default-prefix": ("a string", _str),
    "stubs": ('a table of platform = "path"', _stubs),
    "stub-dir": ("a path (a string)", _path),
    "mirrors": ('a table of "URL" = ["mirror URL", ...]', _mirrors),
    "timeout": ("an integer (seconds)", _int),
    "retries": ("an integer", _int),
    "concurrency": ("an integer", _int),
    "categories": ("a list of strings", _strs),
    "channels": ("a list of strings", _strs),
    "specs": ("a list of strings", _strs),
    "inject": ("a list of paths", _paths),
    "ignore-pypi-non-wheel": ("true or false", _bool),
    "sign-command": ("a string", _str),
    "image": ("a table of image settings", read_image_table),
}


@dataclass(frozen=True)
class BuildConfig:
    """A validated settings table: its file, how ``--dry-run`` names it, its values by key."""

    path: Path
    label: str
    values: dict[str, Any]


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def parse_table(table: Mapping[str, object], path: Path, label: str) -> BuildConfig:
    """Validate ``table`` (read from ``path``); every problem is named in one error."""
    problems, values = [], {}
    for key, value in table.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r} in {label} ({path}){hint}")
            continue
        expected, reader = KEYS[key]
        try:
            values[key] = reader(value, path.parent)
        except TypeError as e:
            bad = e.args[0] if e.args else value
            inner = "" if bad is value else f" ({bad!r})"  # a wrong item of a list or table
            problems.append(
                f"{key!r} in {label} ({path}) must be {expected}, not {_toml_type(bad)}{inner}"
            )
        except UsageError as e:
            problems.append(f"{key!r} in {label} ({path}): {e}")
    if problems:
        unknown = any(p.startswith("unknown key") for p in problems)
        listed = f"; valid keys: {', '.join(KEYS)}" if unknown else ""
        raise UsageError("; ".join(problems) + listed)
    return BuildConfig(path, label, values)


def _load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read the lockship settings in {path}: {e}") from e


def _table_in(path: Path) -> tuple[str, Mapping[str, object]] | None:
    """(label, table) of the lockship settings in ``path``, or None if it holds none."""
    data = _load(path)
    tool = data.get("tool")
    table = tool.get("lockship") if isinstance(tool, dict) else None
    if path.name == "lockship.toml" and set(data) != {"tool"}:
        return path.name, data  # top-level keys ("tool" beside them is an unknown key)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UsageError(f"[tool.lockship] in {path} must be a table, not {_toml_type(table)}")
    return f"{path.name} [tool.lockship]", table


def read_config(input_path: Path | None) -> BuildConfig | None:
    """The settings beside ``input_path`` (a lockfile or a folder; None: the current folder)."""
    folder = Path() if input_path is None else input_path
    if not folder.is_dir():
        folder = folder.parent
    found: list[tuple[Path, tuple[str, Mapping[str, object]]]] = []
    for path in (folder / name for name in CONFIG_FILES):
        held = _table_in(path) if path.is_file() else None
        if held is not None:
            found.append((path, held))
    if len(found) > 1:
        names = " and ".join(str(path) for path, _ in found)
        raise UsageError(f"lockship settings in both {names}; keep them in one file")
    if not found:
        return None
    path, (label, table) = found[0]
    return parse_table(table, path, label)


def command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (``args`` of ``lockship build``), by table key;
    ``stubs`` still as the ``--stub`` texts (see :func:`merge_settings`)."""
    given: dict[str, Any] = {}
    if args.all_platforms:
        given["platforms"] = "all"
    elif args.platforms:
        given["platforms"] = tuple(dict.fromkeys(args.platforms))
    if args.no_link_scripts:
        given["link-scripts"] = False
    elif args.link_scripts is not None:
        given["link-scripts"] = args.link_scripts
    if args.mirror:
        mirrors: dict[str, list[str]] = {}
        for text in args.mirror:
            original, mirror = parse_mirror(text)
            mirrors.setdefault(original, []).append(mirror)
        given["mirrors"] = mirrors
    given["version"] = args.installer_version
    given["stubs"] = tuple(args.stub) or None
    given["image"] = image_flags(args)
    for key in KEYS.keys() - {"platforms", "link-scripts", "mirrors", "version", "stubs", "image"}:
        value = getattr(args, key.replace("-", "_"))
        if isinstance(value, list):
            value = tuple(value)
        # a flag left off and a repeatable option not given are not settings
        given[key] = None if value is False or value == () else value
    return {k: v for k, v in given.items() if v is not None}


def parse_stubs(values: Sequence[str], platforms: Sequence[str]) -> dict[str, Path]:
    """``--stub [PLATFORM=]PATH`` values; a bare PATH is for the one target platform."""
    stubs: dict[str, Path] = {}
    for value in values:
        platform, sep, path = value.partition("=")
        if sep and "/" not in platform and "\\" not in platform:
            stubs[platform] = Path(path)
            continue
        targets = list(platforms) or [host_platform()]
        if len(targets) != 1:
            raise UsageError("with several platforms, give stubs as --stub PLATFORM=PATH")
        stubs[targets[0]] = Path(value)
    return stubs


def merge_settings(given: Mapping[str, Any], config: BuildConfig | None) -> Settings:
    """The command line's values over the table's over the defaults, with their sources."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in fields(Settings):
        key = key_of(f.name)
        if key not in KEYS:
            continue
        if key in given:
            values[f.name], sources[key] = given[key], COMMAND_LINE
        elif config is not None and key in config.values:
            values[f.name], sources[key] = config.values[key], config.label
        else:
            sources[key] = DEFAULT
    # image settings merge key by key: the table's, then the command line's
    table_image = config.values.get("image") if config is not None else None
    values["image"] = merge_image(given.get("image"), table_image)
    if sources["stubs"] == COMMAND_LINE:
        platforms = values.get("platforms", ())
        values["stubs"] = parse_stubs(values["stubs"], () if platforms == "all" else platforms)
    return Settings(**values, sources=sources)


def describe_settings(settings: Settings) -> list[str]:
    """One line per setting: ``key = value  (source)``, for ``--dry-run``."""
    lines = []
    for f in fields(Settings):
        key = key_of(f.name)
        if key in KEYS:
            shown = _show(getattr(settings, f.name))
            lines.append(f"  {key} = {shown}  ({settings.sources.get(key, DEFAULT)})")
    return lines


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return _show(tuple(value))
    return str(value)
