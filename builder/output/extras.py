"""What an installer carries besides its packages (the license, the post-install script) and
which link scripts it may run (``--link-scripts allow=``), checked at build time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lockship.builder.errors import BuildError


def check_link_script_policy(
    allowed: Sequence[str] | None, scripts: Mapping[str, Sequence[str]]
) -> None:
    """With an allow-list, a package outside it that carries a link script (post-link,
    pre-unlink, pre-link: ``scripts`` maps package names to them) fails the build, all such
    packages named in one line."""
    if allowed is None:
        return
    refused = sorted(n for n in scripts if n not in allowed)
    if not refused:
        return
    named = ", ".join(f"{n} ({', '.join(scripts[n])})" for n in refused)
    raise BuildError(
        f"link scripts not allowed by --link-scripts allow=: {named}; add the packages "
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
