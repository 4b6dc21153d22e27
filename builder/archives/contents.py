"""Facts about the fetched archives that the installer needs before it writes anything."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lockship.builder.errors import BuildError
from lockship.stub.shared.boundary import write_text_atomically
from rattler import FileMode, PathsJson

BLOCK = 4096

#: the scripts conda runs around linking a package: ``bin/.NAME-post-link.sh``, ``-pre-unlink``
#: (py-rattler 0.28 runs both: post-link after linking, pre-unlink before an update removes the
#: package) and the deprecated ``-pre-link`` (which rattler does not run, but conda does)
LINK_SCRIPT = re.compile(r"(?:^|[/\\])\.[^/\\]+-(?:post-link|pre-unlink|pre-link)\.(?:sh|bat)$")


@dataclass(frozen=True)
class ArchiveFacts:
    installed_size: int
    #: length of the shortest binary placeholder, None without binary placeholders
    max_prefix_length: int | None
    #: (archive file name, script path) of every link script (:data:`LINK_SCRIPT`)
    link_scripts: tuple[tuple[str, str], ...] = ()
    #: characters in the longest relative path
    max_path_length: int = 0


_Facts = tuple[int, int | None, tuple[str, ...], int]


def _facts_of(path: Path) -> _Facts:
    """(installed size, shortest binary placeholder, link scripts, deepest path)."""
    try:
        paths_json = PathsJson.from_package_archive(path)
    except Exception as e:  # rattler raises plain errors for unreadable archives
        raise BuildError(f"{path.name} is not a readable conda package: {e}") from e
    installed = 0
    shortest: int | None = None
    scripts: list[str] = []
    deepest = 0
    for entry in paths_json.paths:
        # what it occupies on disk: whole 4 KiB blocks, at least one per file
        installed += max(1, -(-(entry.size_in_bytes or 0) // BLOCK)) * BLOCK
        relative = str(entry.relative_path)
        deepest = max(deepest, len(relative))
        if LINK_SCRIPT.search(relative):
            scripts.append(relative.replace("\\", "/"))
        placeholder = entry.prefix_placeholder
        if placeholder is not None and str(placeholder.file_mode) == str(FileMode("binary")):
            length = len(placeholder.placeholder)
            shortest = length if shortest is None else min(shortest, length)
    return installed, shortest, tuple(sorted(scripts)), deepest


def _cached_facts(path: Path) -> _Facts:
    """Facts of a cached archive, remembered next to it (archives in the cache never change)."""
    sidecar = path.with_name(f".{path.name}.facts.json")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        return (
            int(data["installed"]),
            data["shortest"],
            tuple(str(s) for s in data["link_scripts"]),
            int(data["deepest"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    facts = _facts_of(path)
    keys = ("installed", "shortest", "link_scripts", "deepest")
    with contextlib.suppress(OSError):  # a read-only cache still builds, just slower
        write_text_atomically(sidecar, json.dumps(dict(zip(keys, facts, strict=True))))
    return facts


def inspect_archives(paths: Iterable[Path]) -> ArchiveFacts:
    installed = 0
    shortest: int | None = None
    scripts: list[tuple[str, str]] = []
    deepest = 0
    for path in paths:
        size, placeholder, found, depth = _cached_facts(path)
        installed += size
        deepest = max(deepest, depth)
        scripts += [(path.name, script) for script in found]
        if placeholder is not None:
            shortest = placeholder if shortest is None else min(shortest, placeholder)
    return ArchiveFacts(installed, shortest, tuple(sorted(set(scripts))), deepest)


def virtual_package_requirements(depends: Iterable[str]) -> tuple[str, ...]:
    """The virtual-package dependencies (``__glibc >=2.17`` ...) among ``depends``."""
    return tuple(sorted({d for d in depends if d.startswith("__")}))
