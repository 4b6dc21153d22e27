"""The rattler HTTP client the builder downloads with: authentication, mirrors, timeouts."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lockship.builder.errors import UsageError
from rattler import Client
from rattler.networking import AuthenticationMiddleware, MirrorMiddleware

#: the variable rattler (and pixi) read the authentication file from
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


def make_client(options: NetworkOptions, *, timeout: int) -> Client:
    mirrors: dict[str, list[str]] = {}
    if options.config is not None:
        mirrors.update(mirrors_from_config(options.config))
    mirrors.update(options.mirrors)
    if options.auth_file is not None:
        if not options.auth_file.is_file():
            raise UsageError(f"the auth file {options.auth_file} does not exist")
        # rattler's authentication middleware reads the file named by this variable
        os.environ[AUTH_FILE_ENV] = str(options.auth_file.resolve())
    middlewares: list[MirrorMiddleware | AuthenticationMiddleware] = []
    if mirrors:
        middlewares.append(MirrorMiddleware(mirrors))
    middlewares.append(AuthenticationMiddleware())
    return Client(middlewares=middlewares, timeout=timeout)  # type: ignore[arg-type]
