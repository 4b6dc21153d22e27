"""What an installer carries besides its packages (the license, the post-install script) and
which post-link scripts it may run (``--link-scripts allow=``), checked at build time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lockship.builder.errors import BuildError


def check_link_script_policy(
    allowed: Sequence[str] | None, with_scripts: Sequence[str], platform: str
) -> None:
    """With an allow-list, a package outside it that carries a post-link script fails the
    build (all such packages named in one line)."""
    if allowed is None:
        return
    refused = [n for n in with_scripts if n not in allowed]
    if not refused:
        return
    folder, suffix = ("Scripts", "bat") if platform.startswith("win-") else ("bin", "sh")
    scripts = ", ".join(f"{n} ({folder}/.{n}-post-link.{suffix})" for n in refused)
    raise BuildError(
        f"post-link scripts not allowed by --link-scripts allow=: {scripts}; add the packages "
        "to the list, or build with --no-link-scripts"
    )


def extra_entries(
    license: Path | None, post_install: Path | None, platform: str
) -> dict[str, tuple[str, Path]]:
    """Manifest option -> (payload entry, file) for the license and the post-install script."""
    extras: dict[str, tuple[str, Path]] = {}
    if license is not None:
        if not license.is_file():
            raise BuildError(f"the license file {license} does not exist")
        extras["license"] = ("lockship/LICENSE.txt", license)
    if post_install is not None:
        allowed = (".bat", ".ps1") if platform.startswith("win-") else (".sh",)
        if post_install.suffix not in allowed:
            raise BuildError(
                f"the post-install script for {platform} must end in "
                f"{' or '.join(allowed)}, not {post_install.name}"
            )
        if not post_install.is_file():
            raise BuildError(f"the post-install script {post_install} does not exist")
        extras["post_install"] = (f"lockship/post-install{post_install.suffix}", post_install)
    return extras
