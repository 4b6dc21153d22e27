"""Options declared once, as dataclass fields: the command line, the settings table and the
errors of both are generated from the declarations.

A field declared with :func:`option` carries everything about one option: its flags and help
text, its ``[tool.lockship]`` key, its default, and its :class:`Kind` (the type as a parser: how
to read it from TOML, how to parse it from command-line text, what it is in words for errors,
how ``--dry-run`` shows it). :func:`add_options` puts the fields of a dataclass on an argparse
parser, :func:`given_on_command_line` reads them back (a flag left off is not a value),
:func:`read_table` validates a table by key. A value out of range is reported where it came
from: ``--timeout must be at least 1`` or ``'timeout' in pixi.toml [tool.lockship] (...) must
be at least 1``.

Adding an option is one field in :class:`lockship.builder.settings.Settings` (or, if it belongs
to the run and not to the project, in :class:`~lockship.builder.settings.BuildRequest`), the
code that uses it, and its line in ``docs/builder.md`` (``tests/test_settings.py`` checks that
line).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from lockship.builder.errors import UsageError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
_METADATA = "lockship.option"


@dataclass(frozen=True)
class Kind(Generic[T_co]):
    """A value's type as its parsers.

    ``read`` takes a TOML value and the folder of its file (paths are relative to it) and
    raises ``TypeError(bad value)`` for a wrong type, ``ValueError(message)`` for a value out
    of range; ``parse`` takes the texts given for one flag (one, or one per use of a repeatable
    flag) and raises ``ValueError(message)``.
    """

    expects: str
    read: Callable[[object, Path], T_co]
    parse: Callable[[Sequence[str]], T_co] | None = None
    #: the flag may be given several times; its texts are parsed together
    repeat: bool = False
    #: the value as ``--dry-run`` shows it
    show: Callable[[Any], str] = lambda value: show_value(value)


#: the ``const`` of a flag that takes a value
TAKES_VALUE = object()


@dataclass(frozen=True)
class Flag:
    """One command-line spelling of an option: a flag taking a value, or a switch (``const``)."""

    names: tuple[str, ...]
    help: str
    metavar: str | None = None
    const: object = TAKES_VALUE

    @property
    def name(self) -> str:
        """The name errors use: the longest spelling (``--concurrency``, not ``-j``)."""
        return max(self.names, key=len)


@dataclass(frozen=True)
class Option(Generic[T]):
    """What :func:`option` stores in a field's metadata."""

    kind: Kind[T]
    flags: tuple[Flag, ...]
    #: the table key; None: command line only
    key: str | None
    #: the help section (argparse group) the flags are listed in
    group: str | None


@dataclass(frozen=True)
class Declared:
    """An option as found on its class: field name, declaration, default."""

    name: str
    option: Option[Any]
    default: Any

    @property
    def key(self) -> str | None:
        return self.option.key


_AUTO_KEY = "\0auto"


@overload
def option(
    *names: str,
    default: T,
    kind: Kind[T],
    help: str = "",
    metavar: str | None = None,
    switches: Sequence[Flag] = (),
    key: str | None = _AUTO_KEY,
    group: str | None = None,
) -> T: ...


@overload
def option(
    *names: str,
    factory: Callable[[], T],
    kind: Kind[T],
    help: str = "",
    metavar: str | None = None,
    switches: Sequence[Flag] = (),
    key: str | None = _AUTO_KEY,
    group: str | None = None,
) -> T: ...


def option(
    *names: str,
    default: Any = MISSING,
    factory: Any = MISSING,
    kind: Kind[Any],
    help: str = "",
    metavar: str | None = None,
    switches: Sequence[Flag] = (),
    key: str | None = _AUTO_KEY,
    group: str | None = None,
) -> Any:
    """A dataclass field that is an option.

    ``names`` are the flags taking a value (none: only ``switches``); ``help`` may hold
    ``%(default)s``; ``key`` defaults to the field name with dashes (``output_dir`` is
    ``output-dir``), None keeps the option off the table.
    """
    if names and kind.parse is None:
        raise TypeError(f"{names[0]} takes a value: its kind ({kind.expects}) needs a parse")
    flags = (Flag(names, help, metavar),) if names else ()
    declared = Option(kind, flags + tuple(switches), key, group)
    metadata = {_METADATA: declared}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def declared(cls: type) -> list[Declared]:
    """The options of dataclass ``cls``, in declaration order."""
    found = []
    for f in fields(cls):
        declaration = f.metadata.get(_METADATA)
        if isinstance(declaration, Option):
            key = f.name.replace("_", "-") if declaration.key == _AUTO_KEY else declaration.key
            found.append(Declared(f.name, replace(declaration, key=key), _default(f)))
    return found


def _default(f: Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


# --- the command line ------------------------------------------------------------------------


def _dest(name: str, index: int) -> str:
    return f"{name}:{index}"


def add_options(
    parser: argparse.ArgumentParser, *classes: type, groups: Sequence[str] = ()
) -> None:
    """Add the flags of the options of ``classes`` to ``parser``, the help sections ``groups``
    in this order (more as options name them); several flags of one option exclude each other.
    A flag left off sets nothing (see :func:`given_on_command_line`)."""
    containers: dict[str | None, argparse._ActionsContainer] = {None: parser}
    containers |= {title: parser.add_argument_group(title) for title in groups}
    for d in (d for cls in classes for d in declared(cls)):
        option_ = d.option
        container = containers.get(option_.group)
        if container is None:
            container = containers[option_.group] = parser.add_argument_group(option_.group)
        if len(option_.flags) > 1:
            container = container.add_mutually_exclusive_group()
        shown = option_.kind.show(d.default).replace("%", "%%")
        for index, flag in enumerate(option_.flags):
            common: dict[str, Any] = {
                "dest": _dest(d.name, index),
                "default": argparse.SUPPRESS,
                "help": flag.help.replace("%(default)s", shown),
            }
            if flag.const is not TAKES_VALUE:
                container.add_argument(*flag.names, action="store_const", const=True, **common)
            else:
                action = "append" if option_.kind.repeat else "store"
                metavar = flag.metavar or d.name.upper()
                container.add_argument(*flag.names, action=action, metavar=metavar, **common)


def given_on_command_line(args: argparse.Namespace, cls: type, command: str) -> dict[str, Any]:
    """The options of ``cls`` given in ``args``, parsed and checked, by field name; a bad value
    is a :class:`UsageError` naming its flag and the help of ``command``."""
    values: dict[str, Any] = {}
    for d in declared(cls):
        for index, flag in enumerate(d.option.flags):
            texts = getattr(args, _dest(d.name, index), None)
            if texts is None:
                continue
            if flag.const is not TAKES_VALUE:
                values[d.name] = flag.const
                continue
            parse = d.option.kind.parse
            if parse is None:
                raise TypeError(f"{flag.name} takes a value its kind cannot parse")
            try:
                values[d.name] = parse(texts if isinstance(texts, list) else [texts])
            except ValueError as e:
                raise UsageError(f"{flag.name} {e} (see {command} --help)") from e
    return values


# --- the table -------------------------------------------------------------------------------


def toml_type(value: object) -> str:
    """What a TOML value is, in the words errors use."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def read_table(table: Mapping[str, object], cls: type, base: Path, where: str) -> dict[str, Any]:
    """The table's values by field name of ``cls``; every problem is named in one
    :class:`UsageError` (``where`` says which table: ``in pixi.toml [tool.lockship] (PATH)``)."""
    by_key = {d.key: d for d in declared(cls) if d.key is not None}
    problems, values = [], {}
    for key, value in table.items():
        d = by_key.get(key)
        if d is None:
            close = difflib.get_close_matches(key, by_key, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r} {where}{hint}")
            continue
        expects = d.option.kind.expects
        try:
            values[d.name] = d.option.kind.read(value, base)
        except TypeError as e:
            bad = e.args[0] if e.args else value
            inner = "" if bad is value else f" ({bad!r})"  # a wrong item of a list or table
            problems.append(f"{key!r} {where} must be {expects}, not {toml_type(bad)}{inner}")
        except ValueError as e:
            problems.append(f"{key!r} {where} {e}")
        except UsageError as e:
            problems.append(f"{key!r} {where}: {e}")
    if problems:
        unknown = any(p.startswith("unknown key") for p in problems)
        listed = f"; valid keys: {', '.join(by_key)}" if unknown else ""
        raise UsageError("; ".join(problems) + listed)
    return values


# --- showing values --------------------------------------------------------------------------


def show_value(value: object) -> str:
    """A value as ``--dry-run`` prints it, close to how the table writes it."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show_value(v)}" for k, v in value.items()) + "}"
    return str(value)


# --- the kinds every option set uses ---------------------------------------------------------


def read_string(value: object, base: Path) -> str:
    """A non-empty TOML string (``TypeError`` otherwise)."""
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def read_path(value: object, base: Path) -> Path:
    """A TOML path: relative to ``base`` (its file's folder), ``~`` expanded."""
    path = Path(read_string(value, base)).expanduser()
    return path if path.is_absolute() else base / path


def read_strings(value: object, base: Path) -> tuple[str, ...]:
    """A TOML list of non-empty strings."""
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(read_string(v, base) for v in value)


def read_bool(value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _last(texts: Sequence[str]) -> str:
    return texts[-1]


#: a non-empty string
TEXT = Kind("a string", read_string, _last)
#: a path; in a table relative to its file, ``~`` expanded
PATH = Kind("a path (a string)", read_path, lambda texts: Path(texts[-1]))
#: a repeatable string
TEXTS: Kind[tuple[str, ...]] = Kind(
    "a list of strings", read_strings, lambda texts: tuple(texts), repeat=True
)
#: a repeatable path
PATHS = Kind(
    "a list of paths",
    lambda value, base: tuple(read_path(v, base) for v in read_strings(value, base)),
    lambda texts: tuple(Path(t) for t in texts),
    repeat=True,
)
#: true or false; on the command line a switch
BOOLEAN = Kind("true or false", read_bool)
#: true or false, read as its opposite (a key like ``no-pyc`` for a field like ``pyc``)
NEGATED_BOOLEAN = Kind(
    "true or false",
    lambda value, base: not read_bool(value, base),
    show=lambda v: show_value(not v),
)


def integer(minimum: int, unit: str = "") -> Kind[int]:
    """An integer of at least ``minimum``; ``unit`` goes into the words (``seconds``)."""
    expects = f"an integer ({unit})" if unit else "an integer"

    def check(value: int) -> int:
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    def read(value: object, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(value)
        return check(value)

    def parse(texts: Sequence[str]) -> int:
        try:
            value = int(texts[-1])
        except ValueError:
            raise ValueError(f"must be {expects}, not {texts[-1]!r}") from None
        return check(value)

    return Kind(expects, read, parse)
