"""What makes an installed prefix look like conda made it, and remember which installer did:
the conda history, the lockship marker, activation scripts and the uninstaller."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from lockship.stub import __version__
from lockship.stub.activation import write_activation_env, write_activation_scripts
from lockship.stub.compat import remove_cache_tag
from lockship.stub.shared.boundary import write_text_atomically
from lockship.stub.shared.manifest import Manifest
from lockship.stub.uninstaller import write_uninstaller

# no .json suffix: conda, mamba and rattler read every conda-meta/*.json as a package record
MARKER = Path("conda-meta") / "lockship"


def finish_prefix(prefix: Path, manifest: Manifest, *, installer_name: str) -> None:
    """Write the history, activation scripts, uninstaller and marker into a linked prefix."""
    write_history(prefix, manifest, installer_name=installer_name)
    write_activation_scripts(prefix, manifest.platform)
    write_activation_env(prefix, manifest.platform)
    write_uninstaller(prefix, manifest)
    write_marker(prefix, manifest)
    remove_cache_tag(prefix)


def write_history(
    prefix: Path,
    manifest: Manifest,
    *,
    installer_name: str,
    when: datetime.datetime | None = None,
    shown_prefix: str | None = None,
) -> None:
    """Append this installation to ``conda-meta/history``; an image's names its own time and
    prefix (``when``, ``shown_prefix``)."""
    now = (when or datetime.datetime.now()).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"==> {now} <==",
        f"# cmd: {installer_name} --prefix {shown_prefix or prefix}",
        f"# lockship version: {__version__}",
        f"# installer: {manifest.name} {manifest.version} ({manifest.platform})",
    ]
    for p in sorted(manifest.packages, key=lambda p: p.name):
        channel = p.channel.rstrip("/").rsplit("/", 1)[-1] or p.channel
        lines.append(f"+{channel}/{p.subdir}::{p.name}-{p.version}-{p.build}")
    lines.append(f"# update specs: {json.dumps(sorted(p.name for p in manifest.packages))}")
    history = prefix / "conda-meta" / "history"
    try:
        before = history.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = ""
    # appended by writing a new file: an update's snapshot shares the old file's inode
    write_text_atomically(history, before + "\n".join(lines) + "\n")


def write_marker(prefix: Path, manifest: Manifest) -> None:
    """Record which installer made this prefix (``-u`` checks it)."""
    data = {
        "name": manifest.name,
        "version": manifest.version,
        "platform": manifest.platform,
        "environment": manifest.environment,
        "lockship_version": manifest.lockship_version,
        "packages": sorted(p.file_name for p in manifest.packages),
    }
    write_text_atomically(prefix / MARKER, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_marker(prefix: Path) -> dict[str, object] | None:
    try:
        data = json.loads((prefix / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
