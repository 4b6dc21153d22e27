"""``--extract DIR``: the installer's packages as a plain local channel, plus an
``environment.yml`` and a ``pixi.lock`` that recreate the environment offline with micromamba,
conda or pixi (the fallback pixi-pack users know).

Nothing a user wrote is replaced: if any of the four entries exists already in the folder,
the extract is refused before anything is written. Everything is written into a temporary
folder inside the target first and moved into place at the end, so a failed extract leaves
the folder as it was and can simply be run again.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lockship.stub.channel import by_subdir, write_repodata
from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import Payload, copy_entry
from lockship.stub.shared.progress import Reporter
from rattler import Channel, LockFile, LockPlatform, RepoData

#: what an extract writes into its folder
TARGETS = ("channel", "environment.yml", "pixi.lock", "README.txt")


def extract_channel(payload: Payload, manifest: Manifest, target: Path, reporter: Reporter) -> Path:
    """Write ``target/channel`` (archives + repodata), ``environment.yml``, ``pixi.lock`` and
    ``README.txt``; refuse if any of them exists."""
    if manifest.delta is not None:
        raise InstallError(
            f"this installer carries only what changed since {manifest.delta.name} "
            f"{manifest.delta.version}, not a whole environment; extract from the full "
            f"installer of {manifest.name} {manifest.version}"
        )
    if target.exists() and not target.is_dir():
        raise InstallError(f"{target} is a file; extract into a folder")
    _refuse_existing(target)
    created = _existing_ancestor(target) if not target.exists() else None
    work: Path | None = None
    try:
        target.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".lockship-extract-", suffix=".partial", dir=target))
        _write_all(payload, manifest, work, target.resolve(), reporter)
        _refuse_existing(target)  # one created meanwhile is not replaced either
        _move_into(work, target)
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if created is not None:  # the folders this extract created go again
            shutil.rmtree(_first_below(created, target), ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return target


def _refuse_existing(target: Path) -> None:
    for name in TARGETS:
        path = target / name
        if path.exists() or path.is_symlink():
            raise InstallError(
                f"{path} already exists; extract into a new or empty folder (nothing was written)"
            )


def _existing_ancestor(path: Path) -> Path:
    return next(p for p in path.parents if p.exists())


def _first_below(ancestor: Path, path: Path) -> Path:
    """The folder just below ``ancestor`` on the way to ``path``."""
    return ancestor / path.relative_to(ancestor).parts[0]


def _move_into(work: Path, target: Path) -> None:
    """Move the finished entries from ``work`` into ``target`` (checked free just before);
    if one move fails, the ones made are taken back."""
    moved: list[Path] = []
    try:
        for name in TARGETS:
            (work / name).rename(target / name)
            moved.append(target / name)
    except BaseException:
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _write_all(
    payload: Payload, manifest: Manifest, work: Path, final: Path, reporter: Reporter
) -> None:
    """Write the four entries into ``work``; their URLs name where they will be, ``final``."""
    channel_dir = work / "channel"
    channel_url = (final / "channel").as_uri()
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
    lines = [f"name: {manifest.name}", "channels:", f"  - {channel_url}", "dependencies:"]
    lines += [
        f"  - {p.name}=={p.version}={p.build}"
        for p in sorted(manifest.packages, key=lambda p: p.name)
    ]
    (work / "environment.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_lock(channel_dir, manifest, work / "pixi.lock", channel_url)
    (work / "README.txt").write_text(
        f"{manifest.name} {manifest.version} ({manifest.platform}), extracted from its installer.\n"
        "Install it offline with one of:\n"
        f"  micromamba create -p PREFIX -f environment.yml --offline\n"
        f"  conda env create -p PREFIX -f environment.yml --offline\n"
        "  pixi install (with this pixi.lock next to a pixi.toml)\n",
        encoding="utf-8",
    )


def write_lock(channel_dir: Path, manifest: Manifest, path: Path, channel_url: str) -> None:
    """A pixi.lock of the packages in ``channel_dir``, which will be at ``channel_url``."""
    platform = LockPlatform(manifest.platform)
    lock = LockFile([platform])
    channel = Channel(channel_url)
    for subdir in sorted({p.subdir for p in manifest.packages}):
        records = RepoData.from_path(channel_dir / subdir / "repodata.json").into_repo_data(channel)
        for record in records:
            lock.add_conda_package(manifest.environment, platform, record)
    lock.to_path(path)
