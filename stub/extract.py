"""``--extract DIR``: the installer's packages as a plain local channel, plus an
``environment.yml`` and a ``pixi.lock`` that recreate the environment offline with micromamba,
conda or pixi (the fallback pixi-pack users know)."""

from __future__ import annotations

from pathlib import Path

from lockship.stub.channel import by_subdir, write_repodata
from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import Payload, copy_entry
from lockship.stub.shared.progress import Reporter
from rattler import Channel, LockFile, LockPlatform, RepoData


def extract_channel(payload: Payload, manifest: Manifest, target: Path, reporter: Reporter) -> Path:
    """Write ``target/channel`` (archives + repodata), ``environment.yml`` and ``pixi.lock``."""
    if manifest.delta is not None:
        raise InstallError(
            f"this installer carries only what changed since {manifest.delta.name} "
            f"{manifest.delta.version}, not a whole environment; extract from the full "
            f"installer of {manifest.name} {manifest.version}"
        )
    channel_dir = target / "channel"
    if channel_dir.exists() and any(channel_dir.iterdir()):
        raise InstallError(f"{channel_dir} already exists and is not empty; choose another folder")
    groups = by_subdir(manifest.packages)
    reporter.start("Extracting", manifest.total_size, unit="B")
    for subdir in sorted({*groups, "noarch"}):
        (channel_dir / subdir).mkdir(parents=True, exist_ok=True)
        write_repodata(channel_dir / subdir / "repodata.json", subdir, groups.get(subdir, []))
    for package in manifest.packages:
        entry = payload.entry(package.entry)
        copy_entry(payload, entry, channel_dir / package.subdir / package.file_name)
        reporter.advance(entry.size)
    reporter.finish()
    channel_url = channel_dir.resolve().as_uri()
    lines = [f"name: {manifest.name}", "channels:", f"  - {channel_url}", "dependencies:"]
    lines += [
        f"  - {p.name}=={p.version}={p.build}"
        for p in sorted(manifest.packages, key=lambda p: p.name)
    ]
    (target / "environment.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_lock(channel_dir, manifest, target / "pixi.lock")
    (target / "README.txt").write_text(
        f"{manifest.name} {manifest.version} ({manifest.platform}), extracted from its installer.\n"
        "Install it offline with one of:\n"
        f"  micromamba create -p PREFIX -f environment.yml --offline\n"
        f"  conda env create -p PREFIX -f environment.yml --offline\n"
        "  pixi install (with this pixi.lock next to a pixi.toml)\n",
        encoding="utf-8",
    )
    return target


def write_lock(channel_dir: Path, manifest: Manifest, path: Path) -> None:
    platform = LockPlatform(manifest.platform)
    lock = LockFile([platform])
    channel = Channel(channel_dir.resolve().as_uri())
    for subdir in sorted({p.subdir for p in manifest.packages}):
        records = RepoData.from_path(channel_dir / subdir / "repodata.json").into_repo_data(channel)
        for record in records:
            lock.add_conda_package(manifest.environment, platform, record)
    lock.to_path(path)
