"""What an image build is asked for: ``--image`` and its options, or the
``[tool.lockship.image]`` table, each option declared once (see
:mod:`lockship.builder.options`).

:class:`ImageSettings` is the value of :class:`~lockship.builder.settings.Settings`'s ``image``
field: each field is a flag of ``lockship build`` and a key of the image table. The command
line overrides the table key by key (:func:`~lockship.builder.settings.merge_settings`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockship.builder.options import (
    BOOLEAN,
    PATH,
    TEXT,
    Flag,
    Kind,
    option,
    read_string,
    read_table,
)

#: the help section of the image options
IMAGES = "container images"


def command_words(text: str) -> tuple[str, ...]:
    """``--entrypoint``/``--cmd``: a JSON array (``'["app", "--serve"]'``) or words split as
    a POSIX shell would (``"app --serve"``); a ValueError says what is wrong."""
    if text.lstrip().startswith("["):
        try:
            words = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{text!r} is not a JSON array: {e}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{text!r} must be an array of strings")
        return tuple(words)
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise ValueError(f"cannot split {text!r}: {e}") from None


def _read_command(value: object, base: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return command_words(value)
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return tuple(value)
    raise TypeError(value)


#: an entrypoint or command: an array of strings, or words
COMMAND = Kind(
    "a command (an array of strings, or words)",
    _read_command,
    lambda texts: command_words(texts[-1]),
)


def _read_annotations(value: object, base: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(value)
    annotations: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(text, str):
            raise TypeError(text)
        annotations[read_string(key, base)] = text
    return annotations


def _parse_annotations(texts: Sequence[str]) -> dict[str, str]:
    annotations: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"takes KEY=VALUE, not {text!r}")
        annotations[key] = value
    return annotations


ANNOTATIONS = Kind('a table of "key" = "value"', _read_annotations, _parse_annotations, repeat=True)


@dataclass(frozen=True)
class ImageSettings:
    """An image of the environment: each field is a flag and a key of the image table."""

    #: write only the image, no installer
    only: bool = option(
        default=False,
        kind=BOOLEAN,
        switches=[Flag(("--image-only",), "write the image and no installer", const=True)],
        group=IMAGES,
    )
    #: where the environment lives in the image (default ``/opt/NAME``)
    prefix: str | None = option(
        "--image-prefix",
        default=None,
        kind=TEXT,
        metavar="PATH",
        help="where the environment lives in the image (default: /opt/NAME)",
        group=IMAGES,
    )
    #: a registry reference, an OCI archive or an OCI layout folder (default: distroless base)
    base: str | None = option(
        "--base",
        default=None,
        kind=TEXT,
        metavar="BASE",
        help="the base image: a registry reference (recorded by digest), an OCI archive or an "
        "OCI layout folder (default: distroless base-debian12)",
        group=IMAGES,
    )
    user: str | None = option(
        "--image-user",
        default=None,
        kind=TEXT,
        metavar="USER[:GROUP]",
        help="the user the image runs as",
        group=IMAGES,
    )
    workdir: str | None = option(
        "--workdir",
        default=None,
        kind=TEXT,
        metavar="PATH",
        help="the image's working directory",
        group=IMAGES,
    )
    entrypoint: tuple[str, ...] | None = option(
        "--entrypoint",
        default=None,
        kind=COMMAND,
        metavar="COMMAND",
        help="the image's entrypoint: a JSON array or words",
        group=IMAGES,
    )
    cmd: tuple[str, ...] | None = option(
        "--cmd",
        default=None,
        kind=COMMAND,
        metavar="COMMAND",
        help="the image's default arguments: a JSON array or words",
        group=IMAGES,
    )
    #: ``REGISTRY/REPOSITORY:TAG`` to push the image to
    push: str | None = option(
        "--push",
        default=None,
        kind=TEXT,
        metavar="REGISTRY/REPO:TAG",
        help="push the image there after writing it",
        group=IMAGES,
    )
    #: a docker/podman credentials file for the registries (default: the usual ones)
    registry_auth_file: Path | None = option(
        "--registry-auth-file",
        default=None,
        kind=PATH,
        metavar="FILE",
        key="auth-file",
        help="credentials for --push and --base (docker config.json or podman auth.json "
        "format; default: $REGISTRY_AUTH_FILE, podman's auth.json, ~/.docker/config.json)",
        group=IMAGES,
    )
    #: OCI annotations (and labels) beside lockship's own
    annotations: dict[str, str] = option(
        "--image-annotation",
        factory=dict,
        kind=ANNOTATIONS,
        metavar="KEY=VALUE",
        help="an OCI annotation (and label) of the image; repeatable",
        group=IMAGES,
    )


def _read_image_table(value: object, base: Path) -> ImageSettings:
    if not isinstance(value, dict):
        raise TypeError(value)
    return ImageSettings(**read_table(value, ImageSettings, base, "in the image table"))


#: ``[tool.lockship.image]``, or on the command line ``--image`` (any image flag implies it)
IMAGE: Kind[ImageSettings | None] = Kind("a table of image settings", _read_image_table)

#: the ``--image`` switch: an image with the settings the table and the other flags give
IMAGE_SWITCH = Flag(
    ("--image",),
    "also write an OCI image archive, NAME-VERSION-PLATFORM.oci.tar (several -p: one "
    "multi-platform NAME-VERSION.oci.tar)",
    const=ImageSettings(),
)
