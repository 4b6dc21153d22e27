"""What an image build is asked for: ``--image`` and its options, or the
``[tool.lockship.image]`` table (the command line overrides the table key by key)."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lockship.builder.errors import UsageError


@dataclass(frozen=True)
class ImageSettings:
    #: write only the image, no installer
    only: bool = False
    #: where the environment lives in the image (default ``/opt/NAME``)
    prefix: str | None = None
    #: a registry reference, an OCI archive or an OCI layout folder (default: distroless base)
    base: str | None = None
    user: str | None = None
    workdir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    #: ``REGISTRY/REPOSITORY:TAG`` to push the image to
    push: str | None = None
    #: a docker/podman credentials file for the registries (default: the usual ones)
    auth_file: Path | None = None
    #: OCI annotations (and labels) beside lockship's own
    annotations: dict[str, str] = field(default_factory=dict)


#: table key -> field name
TABLE_KEYS = {
    "only": "only",
    "prefix": "prefix",
    "base": "base",
    "user": "user",
    "workdir": "workdir",
    "entrypoint": "entrypoint",
    "cmd": "cmd",
    "push": "push",
    "auth-file": "auth_file",
    "annotations": "annotations",
}


def command_words(text: str) -> tuple[str, ...]:
    """``--entrypoint``/``--cmd``: a JSON array (``'["app", "--serve"]'``) or words split as
    a POSIX shell would (``"app --serve"``)."""
    if text.lstrip().startswith("["):
        try:
            words = json.loads(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON array: {e}") from e
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise argparse.ArgumentTypeError(f"{text!r} must be an array of strings")
        return tuple(words)
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {e}") from e


def _annotation(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, not {text!r}")
    return key, value


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("container images")
    add = group.add_argument
    add(
        "--image",
        action="store_true",
        help="also write an OCI image archive, NAME-VERSION-PLATFORM.oci.tar (several -p: one "
        "multi-platform NAME-VERSION.oci.tar)",
    )
    add("--image-only", action="store_true", help="write the image and no installer")
    add(
        "--image-prefix",
        metavar="PATH",
        help="where the environment lives in the image (default: /opt/NAME)",
    )
    add(
        "--base",
        metavar="BASE",
        help="the base image: a registry reference (recorded by "
        "digest), an OCI archive or an OCI layout folder (default: distroless base-debian12)",
    )
    add("--image-user", metavar="USER[:GROUP]", help="the user the image runs as")
    add("--workdir", metavar="PATH", help="the image's working directory")
    add(
        "--entrypoint",
        metavar="COMMAND",
        type=command_words,
        help="the image's entrypoint: a JSON array or words",
    )
    add(
        "--cmd",
        metavar="COMMAND",
        type=command_words,
        help="the image's default arguments: a JSON array or words",
    )
    add("--push", metavar="REGISTRY/REPO:TAG", help="push the image there after writing it")
    add(
        "--registry-auth-file",
        metavar="FILE",
        type=Path,
        help="credentials for --push and --base (docker config.json or podman auth.json "
        "format; default: $REGISTRY_AUTH_FILE, podman's auth.json, ~/.docker/config.json)",
    )
    add(
        "--image-annotation",
        metavar="KEY=VALUE",
        action="append",
        type=_annotation,
        default=[],
        help="an OCI annotation (and label) of the image; repeatable",
    )


def image_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    """The image settings the command line gives (field name -> value), or None if none."""
    given = {
        "only": args.image_only or None,
        "prefix": args.image_prefix,
        "base": args.base,
        "user": args.image_user,
        "workdir": args.workdir,
        "entrypoint": args.entrypoint,
        "cmd": args.cmd,
        "push": args.push,
        "auth_file": args.registry_auth_file,
        "annotations": dict(args.image_annotation) or None,
    }
    values = {k: v for k, v in given.items() if v is not None}
    if not values and not args.image:
        return None
    return values


def read_image_table(value: object, base: Path) -> dict[str, Any]:
    """``[tool.lockship.image]``: field name -> value; a TypeError names the bad value."""
    if not isinstance(value, dict):
        raise TypeError(value)
    values: dict[str, Any] = {}
    for key, item in value.items():
        if key not in TABLE_KEYS:
            raise UsageError(
                f"unknown key {key!r} in the image table; valid keys: {', '.join(TABLE_KEYS)}"
            )
        name = TABLE_KEYS[key]
        if name == "only":
            if not isinstance(item, bool):
                raise TypeError(item)
            values[name] = item
        elif name in ("entrypoint", "cmd"):
            if isinstance(item, str):
                values[name] = tuple(shlex.split(item))
            elif isinstance(item, list) and all(isinstance(w, str) for w in item):
                values[name] = tuple(item)
            else:
                raise TypeError(item)
        elif name == "annotations":
            if not isinstance(item, dict) or not all(isinstance(v, str) for v in item.values()):
                raise TypeError(item)
            values[name] = dict(item)
        elif name == "auth_file":
            if not isinstance(item, str) or not item:
                raise TypeError(item)
            path = Path(item).expanduser()
            values[name] = path if path.is_absolute() else base / path
        else:
            if not isinstance(item, str) or not item:
                raise TypeError(item)
            values[name] = item
    return values


def merge_image(given: dict[str, Any] | None, table: dict[str, Any] | None) -> ImageSettings | None:
    """The command line's image settings over the table's; None when neither asks for one."""
    if given is None and table is None:
        return None
    settings = ImageSettings()
    names = {f.name for f in fields(ImageSettings)}
    for source in (table or {}, given or {}):
        settings = replace(settings, **{k: v for k, v in source.items() if k in names})
    return settings
