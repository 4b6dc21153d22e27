"""The installer's name and version: where each comes from, checked against conda's rules.

Both name files (``NAME-VERSION-PLATFORM.sh``), the default prefix (``~/NAME``) and lines of
the generated header and uninstallers, so they are checked before anything is planned: the
characters of a conda package name (letters, digits, ``. _ + -``, first a letter or digit;
upper case is kept), and for a version also ``!`` (an epoch). A value that fails is reported
in one line naming the character and where the value came from.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lockship.builder.errors import UsageError
from lockship.builder.inputs.model import Source
from lockship.builder.inputs.pixi import PixiSource

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")
_CHARACTERS = {
    "\n": "a newline",
    "\r": "a carriage return",
    "\t": "a tab",
    " ": "a space",
}

#: where a value given with ``--name``/``--version`` may have come from
OPTION = "from --{} or [tool.lockship]"


@dataclass(frozen=True)
class Identity:
    name: str
    version: str


def check_name(value: str, origin: str) -> str:
    """``value`` if it can name an installer, else a UsageError naming ``origin``."""
    return _check("name", value, origin, _NAME, "letters, digits and . _ + -")


def check_version(value: str, origin: str) -> str:
    """``value`` if it can be an installer's version, else a UsageError naming ``origin``."""
    return _check("version", value, origin, _VERSION, "letters, digits and . _ + - !")


def choose_identity(
    name: str | None,
    version: str | None,
    source: Source,
    *,
    origins: tuple[str, str] = (OPTION.format("name"), OPTION.format("version")),
) -> Identity:
    """The installer's name and version: the options' (``origins`` says where each was
    given), else the input's, else defaults; each checked, its error naming where it came
    from."""
    described = f"from {source.path}" if source.path else "from the input"
    if isinstance(source, PixiSource) and source.workspace_file is not None:
        described = f"from {source.workspace_file}"
    if name:
        chosen_name = check_name(name, origins[0])
    elif source.name:
        chosen_name = check_name(source.name, described)
    else:
        chosen_name = check_name(source.environment, "from -e, the environment's name")
    if version:
        chosen_version = check_version(version, origins[1])
    elif source.version:
        chosen_version = check_version(source.version, described)
    else:
        chosen_version = "0.0.0"
    return Identity(chosen_name, chosen_version)


def _check(what: str, value: str, origin: str, pattern: re.Pattern[str], allowed: str) -> str:
    if pattern.fullmatch(value):
        return value
    if not value:
        problem = "is empty"
    elif not pattern.fullmatch(value[0]):
        problem = f"starts with {_describe(value[0])}"
    else:
        problem = f"holds {_describe(next(c for c in value if not pattern.fullmatch('a' + c)))}"
    shown = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    raise UsageError(
        f'the {what} "{shown}" ({origin}) {problem}; an installer {what} is made of {allowed}, '
        "first a letter or digit"
    )


def _describe(character: str) -> str:
    if character in _CHARACTERS:
        return _CHARACTERS[character]
    if character.isprintable():
        return f'"{character}"'.replace('"""', '"\\""')
    return f"U+{ord(character):04X} ({unicodedata.name(character, 'a control character')})"
