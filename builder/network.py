"""The rattler HTTP client the builder downloads with: authentication, mirrors, timeouts.

Everything is handed to rattler as one configuration (``Client.from_config``): the auth file as
``authentication-override-file``, the mirrors as ``[mirrors]``. Nothing is written into the
process environment, so two clients in one process can use two auth files.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lockship.builder.errors import UsageError
from rattler import Client, Config

#: the variable rattler (and pixi) read the authentication file from when none is given
AUTH_FILE_ENV = "RATTLER_AUTH_FILE"


@dataclass(frozen=True)
class NetworkOptions:
    auth_file: Path | None = None
    #: original URL prefix -> mirror URL prefixes
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    config: Path | None = None


def parse_mirror(text: str) -> tuple[str, str]:
    original, sep, mirror = text.partition("=")
    if not sep or not original or not mirror:
        raise UsageError(f"--mirror takes ORIGINAL=MIRROR, not {text!r}")
    return _slash(original), _slash(mirror)


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def mirrors_from_config(path: Path) -> dict[str, list[str]]:
    """The ``[mirrors]`` table of a pixi/rattler config file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read the config file {path}: {e}") from e
    table = data.get("mirrors", {})
    if not isinstance(table, dict):
        raise UsageError(f"[mirrors] in {path} must be a table of URL = [mirror URLs]")
    return {
        _slash(str(k)): [_slash(str(m)) for m in (v if isinstance(v, list) else [v])]
        for k, v in table.items()
    }


def rattler_config_toml(options: NetworkOptions) -> str:
    """The rattler configuration for ``options`` (JSON strings are TOML basic strings)."""
    mirrors: dict[str, list[str]] = {}
    if options.config is not None:
        mirrors.update(mirrors_from_config(options.config))
    mirrors.update(options.mirrors)
    lines = []
    if options.auth_file is not None:
        if not options.auth_file.is_file():
            raise UsageError(f"the auth file {options.auth_file} does not exist")
        auth_file = json.dumps(str(options.auth_file.resolve()))
        lines.append(f"authentication-override-file = {auth_file}")
    if mirrors:
        lines.append("[mirrors]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in mirrors.items()]
    return "".join(line + "\n" for line in lines)


def make_client(options: NetworkOptions, *, timeout: int) -> Client:
    """A client with these options; without an auth file, rattler reads ``$RATTLER_AUTH_FILE``
    or its default credential stores. rattler's own retries are off: the builder retries
    (``--retries``) and reports each URL it gave up on."""
    config = Config.from_toml(rattler_config_toml(options))
    return Client.from_config(config, max_retries=0, timeout=timeout)
