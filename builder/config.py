"""Build settings kept beside the input: a ``[tool.lockship]`` table in ``pixi.toml`` or
``pyproject.toml``, or a ``lockship.toml`` (top-level keys, or its own ``[tool.lockship]``).

:func:`read_config` finds the table and validates it against the keys of
:class:`~lockship.builder.settings.Settings`; :func:`~lockship.builder.settings.merge_settings`
lays the command line over it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockship.builder.errors import UsageError
from lockship.builder.options import read_table, toml_type
from lockship.builder.settings import Settings

#: the files searched, in the folder of the input, for build settings
CONFIG_FILES = ("lockship.toml", "pixi.toml", "pyproject.toml")


@dataclass(frozen=True)
class BuildConfig:
    """A validated settings table: its file, how ``--dry-run`` names it, its values by
    :class:`~lockship.builder.settings.Settings` field name."""

    path: Path
    label: str
    values: dict[str, Any]


def parse_table(table: Mapping[str, object], path: Path, label: str) -> BuildConfig:
    """Validate ``table`` (read from ``path``); every problem is named in one error."""
    values = read_table(table, Settings, path.parent, f"in {label} ({path})")
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
        raise UsageError(f"[tool.lockship] in {path} must be a table, not {toml_type(table)}")
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
