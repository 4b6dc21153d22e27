"""What an installer holds, as ``--info`` shows it: lines for people, a dict for ``--json``."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import FORMAT_VERSION


def text_summary(manifest: Manifest) -> str:
    """The installer's name, platform and sizes, then one line per package."""
    lines = [
        f"{manifest.name} {manifest.version}",
        f"platform:          {manifest.platform}",
        f"environment:       {manifest.environment}",
        f"built by:          lockship {manifest.lockship_version}",
        f"payload format:    {FORMAT_VERSION}",
        f"packages:          {len(manifest.packages)} "
        f"({manifest.carried_size / 1e6:.1f} MB download, "
        f"{manifest.installed_size / 1e6:.1f} MB installed)",
        f"link scripts:      {link_scripts_line(manifest)}",
        *([f"update of:         {delta_line(manifest)}"] if manifest.delta else []),
        "",
    ]
    built = set(manifest.options.built_wheels)
    wheels = [(*wheel_name_version(entry), entry in built) for entry in manifest.options.wheels]
    width = max(
        (len(name) for name in [*(p.name for p in manifest.packages), *(w[0] for w in wheels)]),
        default=4,
    )
    for p in sorted(manifest.packages, key=lambda p: p.name):
        lines.append(f"  {p.name:<{width}}  {p.version:<12} {p.build:<20} {p.size:>12,d} B")
    for name, version, from_source in sorted(wheels):
        origin = "(PyPI, built from source)" if from_source else "(PyPI)"
        lines.append(f"  {name:<{width}}  {version:<12} {origin}")
    return "\n".join(lines)


def link_scripts_line(manifest: Manifest) -> str:
    """Which packages carry link scripts (post-link, pre-unlink), for the summary shown before
    installing."""
    names = sorted(manifest.options.link_script_packages)
    if not names:
        return "none"
    if not manifest.options.link_scripts:
        return f"{', '.join(names)} (they will not run: built with --no-link-scripts)"
    return f"{', '.join(names)} (they run while installing, updating or removing packages)"


def delta_line(manifest: Manifest) -> str:
    """What a delta installer needs in the prefix and what it carries."""
    delta = manifest.delta
    if delta is None:
        return "none"
    packages = len(manifest.carried_packages)
    wheels = sum(delta.carries(w) for w in manifest.options.wheels)
    return (
        f"{delta.name} {delta.version} ({len(delta.packages)} packages, {len(delta.wheels)} "
        f"wheels), exactly; carries {packages} of {len(manifest.packages)} packages and "
        f"{wheels} of {len(manifest.options.wheels)} wheels"
    )


def json_delta(manifest: Manifest) -> dict[str, Any] | None:
    """The base a delta installer needs (``None`` for a full installer)."""
    delta = manifest.delta
    if delta is None:
        return None
    return {
        "name": delta.name,
        "version": delta.version,
        "packages": [
            {"name": p.name, "file_name": p.file_name, "sha256": p.sha256} for p in delta.packages
        ],
        "wheels": [
            {"name": w.name, "file_name": w.file_name, "sha256": w.sha256} for w in delta.wheels
        ],
        "carried": list(delta.carried),
    }


def wheel_name_version(entry: str) -> tuple[str, str]:
    """``("hello", "2.0")`` for the payload entry ``pypi/hello-2.0-py3-none-any.whl``."""
    name, version = PurePosixPath(entry).name.split("-")[:2]
    return name, version


def json_summary(manifest: Manifest) -> dict[str, Any]:
    """What ``--info --json`` prints."""
    return {
        "name": manifest.name,
        "version": manifest.version,
        "platform": manifest.platform,
        "environment": manifest.environment,
        "lockship_version": manifest.lockship_version,
        "payload_format": FORMAT_VERSION,
        "download_size": manifest.total_size,
        "carried_size": manifest.carried_size,
        "delta_from": json_delta(manifest),
        "installed_size": manifest.installed_size,
        "virtual_packages": list(manifest.virtual_packages),
        "link_scripts": sorted(
            p.name for p in manifest.packages if p.name in manifest.options.link_script_packages
        ),
        "link_scripts_enabled": manifest.options.link_scripts,
        "pypi_wheels": list(manifest.options.wheels),
        "pypi_built_from_source": list(manifest.options.built_wheels),
        "license": manifest.options.license is not None,
        "post_install": manifest.options.post_install is not None,
        "packages": [
            {
                "name": p.name,
                "version": p.version,
                "build": p.build,
                "subdir": p.subdir,
                "size": p.size,
                "sha256": p.sha256,
                "url": p.url,
            }
            for p in sorted(manifest.packages, key=lambda p: p.name)
        ],
    }
