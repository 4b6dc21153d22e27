"""Install the payload's packages into a prefix with rattler.

Everything happens in a staging folder inside the prefix, so rattler's package cache sits on
the prefix's filesystem and can hardlink. On Linux, worker processes unpack the archives there
straight out of the installer while verifying their sha256 (``stub.unpack``) and rattler links
from that cache; elsewhere the archives are copied there, hashed on the way, and rattler unpacks
them from ``file://`` URLs. Afterwards the conda-meta records are pointed back at the locked
URLs, a conda history is written, activation scripts are added and staging is removed.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import json
import os
import shutil
import subprocess
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import rattler
from lockship.stub import __version__
from lockship.stub.activation import write_activation_scripts
from lockship.stub.errors import InstallError, LinkError, one_line
from lockship.stub.hooks import (
    compile_pyc,
    read_marker,
    run_post_install,
    write_marker,
    write_uninstaller,
)
from lockship.stub.manifest import Manifest, PackageInfo
from lockship.stub.payload import Entry, Payload, copy_entry, iter_entry
from lockship.stub.prefix import INCOMPLETE_NAME, STAGE_NAME, check_prefix, prefix_transaction
from lockship.stub.progress import Reporter
from lockship.stub.signals import deferred
from lockship.stub.system import check_virtual_packages
from lockship.stub.unpack import (
    UnpackJob,
    WorkersUnavailable,
    layer_cache,
    unpack_archives,
    worker_count,
)
from rattler import Channel, PrefixRecord, RepoData, RepoDataRecord, Subdir
from rattler.package_cache import PackageCache

#: free space required beyond the installed size (staging copies, metadata, filesystem slack)
SPACE_MARGIN = 1.10
SPACE_EXTRA = 1024 * 1024


@dataclass(frozen=True)
class InstallRequest:
    prefix: Path
    force: bool = False
    update: bool = False
    run_post_install: bool = True
    unattended: bool = True
    installer_name: str = "installer"


class UpdateRefused(InstallError):
    pass


class DiskSpaceError(InstallError):
    def __init__(self, prefix: Path, needed: int, free: int) -> None:
        self.needed, self.free = needed, free
        super().__init__(
            f"not enough free disk space for {prefix}: needs {_mb(needed)}, "
            f"{_mb(free)} free; free some space or choose another prefix"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def required_space(manifest: Manifest) -> int:
    """Bytes the installation needs: the staged archives plus the installed files."""
    return int((manifest.total_size + manifest.installed_size) * SPACE_MARGIN) + SPACE_EXTRA


def check_disk_space(prefix: Path, manifest: Manifest) -> None:
    probe = prefix
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = required_space(manifest)
    if free < needed:
        raise DiskSpaceError(prefix, needed, free)


def preflight(manifest: Manifest, request: InstallRequest) -> None:
    """Every check that can fail before anything is written."""
    check_virtual_packages(manifest.virtual_packages)
    if request.update:
        check_update_target(request.prefix, manifest, force=request.force)
    check_prefix(
        request.prefix,
        force=request.force,
        update=request.update,
        max_length=manifest.max_prefix_length,
    )
    if os.environ.get("LOCKSHIP_SKIP_DISK_CHECK") != "1":
        check_disk_space(request.prefix, manifest)


def check_update_target(prefix: Path, manifest: Manifest, *, force: bool) -> None:
    """``-u`` only replaces an environment made by an installer of the same name."""
    if not prefix.exists() or force:
        return
    marker = read_marker(prefix)
    if marker is None:
        raise UpdateRefused(
            f"{prefix} was not made by a lockship installer, so -u cannot update it; "
            "pass -f as well to install over it anyway"
        )
    if marker.get("name") != manifest.name:
        raise UpdateRefused(
            f"{prefix} holds {marker.get('name')} {marker.get('version')}, not {manifest.name}; "
            "pass -f as well to replace it anyway"
        )


def install(
    payload: Payload, manifest: Manifest, request: InstallRequest, reporter: Reporter
) -> None:
    """Install everything the installer carries into ``request.prefix``."""
    preflight(manifest, request)
    prefix = request.prefix
    hint = f"run the installer again with -f -p {prefix}, or delete the folder"
    try:
        _install(payload, manifest, request, reporter, hint)
    except OSError as e:
        raise FileSystemError(prefix, e, existed=request.update or request.force) from e


class FileSystemError(InstallError):
    def __init__(self, prefix: Path, error: OSError, *, existed: bool) -> None:
        where = f" ({error.filename})" if error.filename else ""
        advice = (
            "free some space and run the installer again"
            if error.errno == errno.ENOSPC
            else ("check the folder's permissions and free space")
        )
        state = (
            f"{prefix} may be incomplete (see {prefix / INCOMPLETE_NAME})"
            if existed
            else "nothing was left behind"
        )
        super().__init__(
            f"writing the environment failed: {error.strerror or error}{where}; {state}; {advice}"
        )


def _install(
    payload: Payload, manifest: Manifest, request: InstallRequest, reporter: Reporter, hint: str
) -> None:
    prefix = request.prefix
    with prefix_transaction(prefix, recover_hint=hint):
        stage = prefix / STAGE_NAME
        records, package_cache = stage_packages(
            payload, manifest, stage, reporter, workers=worker_count()
        )
        installed = installed_records(prefix) if request.update or request.force else []
        link_packages(
            records,
            prefix,
            stage / "cache",
            manifest,
            reporter,
            installed,
            package_cache=package_cache,
        )
        # the package cache and the staged archives are no longer needed: remove them while
        # the remaining steps run (10,000 unlinks take a while)
        with _removing(stage / "cache", stage / "pkgs"):
            _finish(payload, manifest, request, reporter, stage)


@contextmanager
def _removing(*folders: Path) -> Iterator[None]:
    """Remove ``folders`` while the body runs; wait for that before leaving.

    On POSIX ``rm -rf`` does it: it needs no GIL, so it runs beside the body on another core
    (Python's rmtree took twice as long, competing with the body for the GIL).
    """
    existing = [str(f) for f in folders if f.exists()]
    remover: subprocess.Popen[bytes] | None = None
    if existing and os.name == "posix":
        with suppress(OSError):
            remover = subprocess.Popen(
                ["rm", "-rf", "--", *existing],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    cleaner = None
    if remover is None and existing:
        cleaner = threading.Thread(target=_remove_all, args=(existing,), name="cleanup")
        cleaner.start()
    try:
        yield
    finally:
        if remover is not None:
            remover.wait()
        if cleaner is not None:
            cleaner.join()
        _remove_all(existing)  # whatever rm could not remove


def _remove_all(folders: list[str]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _finish(
    payload: Payload, manifest: Manifest, request: InstallRequest, reporter: Reporter, stage: Path
) -> None:
    prefix = request.prefix
    finish_prefix(prefix, manifest, request)
    wheel_sources: list[Path] = []
    if manifest.options.wheels:
        from lockship.stub.wheels import install_wheels  # late: its imports take 50 ms

        wheel_sources = install_wheels(payload, manifest, prefix, stage / "wheels", reporter)
    if manifest.options.pyc:
        compile_pyc(prefix, manifest.platform, reporter, extra=wheel_sources)
    script_entry = manifest.options.post_install
    if script_entry and not request.run_post_install:
        reporter.message("Skipping the post-install script (--no-post-install)")
    elif script_entry:
        script = stage / PurePosixPath(str(script_entry)).name
        copy_entry(payload, payload.entry(str(script_entry)), script)
        run_post_install(script, prefix, manifest, unattended=request.unattended, reporter=reporter)


def installed_records(prefix: Path) -> list[PrefixRecord]:
    """The packages already in ``prefix`` (for an update, rattler's transaction diffs them)."""
    meta = prefix / "conda-meta"
    if not meta.is_dir():
        return []
    records = []
    for path in sorted(meta.glob("*.json")):
        try:
            records.append(PrefixRecord.from_path(path))
        except Exception as e:  # rattler raises its own error types for unreadable records
            raise InstallError(
                f"cannot read {path} ({e}); repair or remove it, or install into a new prefix"
            ) from e
    return records


def stage_packages(
    payload: Payload, manifest: Manifest, stage: Path, reporter: Reporter, *, workers: int = 0
) -> tuple[list[RepoDataRecord], PackageCache | None]:
    """Copy the archives out of the payload into a local channel in ``stage``, verified.

    Returns its records, and the package cache to link from when ``workers`` processes unpacked
    (and so verified) the archives into ``stage/cache``; otherwise each copy is verified while it
    is written and rattler unpacks it (also when worker processes cannot start here).
    """
    channel_dir = stage / "pkgs"
    by_subdir: dict[str, list[PackageInfo]] = defaultdict(list)
    for package in manifest.packages:
        by_subdir[package.subdir].append(package)
    for subdir in {*by_subdir, "noarch"}:
        (channel_dir / subdir).mkdir(parents=True, exist_ok=True)
    reporter.start("Unpacking", manifest.total_size, unit="B")
    entries = {e.name: e for e in payload.entries}
    jobs = [
        (entries[p.entry], channel_dir / p.subdir / p.file_name)
        if p.entry in entries
        else _missing(p.entry)
        for p in manifest.packages
    ]
    package_cache = None
    if workers:
        cache_dir = stage / "cache"
        unpack_jobs = [
            UnpackJob(entry, target, cache_dir / f"{p.name}-{p.version}-{p.build}")
            for (entry, target), p in zip(jobs, manifest.packages, strict=True)
        ]
        try:
            unpack_archives(payload, unpack_jobs, workers, reporter.advance)
            package_cache = layer_cache(cache_dir)
        except WorkersUnavailable as e:
            reporter.message(f"Unpacking without worker processes ({e})")
    if package_cache is None:
        copy_entries(payload, jobs, reporter.advance)
    reporter.finish()
    records: list[RepoDataRecord] = []
    for subdir, packages in sorted(by_subdir.items()):
        repodata = channel_dir / subdir / "repodata.json"
        write_repodata(repodata, subdir, packages)
        records.extend(RepoData.from_path(repodata).into_repo_data(Channel(channel_dir.as_uri())))
    return records, package_cache


def _missing(name: str) -> tuple[Entry, Path]:
    raise InstallError(f"the installer has no entry named {name!r}; download it again")


#: archives are copied (and hashed) by a few threads: sha256 releases the GIL, so two cores
#: hash two archives at once
COPY_WORKERS = min(4, os.cpu_count() or 1)


def copy_entries(
    payload: Payload, jobs: list[tuple[Entry, Path]], advance: Callable[[int], None]
) -> None:
    """Copy entries out of the payload in parallel, verified; stop all workers on failure."""
    stop = threading.Event()

    def work(entry: Entry, target: Path) -> int:
        try:
            with open(target, "xb") as out:
                for chunk in iter_entry(payload, entry):
                    if stop.is_set():
                        raise InstallError("stopped")
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return entry.size

    with ThreadPoolExecutor(max_workers=COPY_WORKERS, thread_name_prefix="copy") as pool:
        futures = [pool.submit(work, entry, target) for entry, target in jobs]
        try:
            for future in as_completed(futures):
                advance(future.result())
        except BaseException:
            stop.set()  # the rollback must not race with a worker still writing
            for future in futures:
                future.cancel()
            wait(futures)
            raise


def write_repodata(path: Path, subdir: str, packages: list[PackageInfo]) -> None:
    doc: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    for p in packages:
        key = "packages.conda" if p.file_name.endswith(".conda") else "packages"
        doc[key][p.file_name] = p.record
    path.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")


class _LinkReporter(rattler.InstallerReporter):
    """Bridges rattler's callbacks to our reporter; remembers failing link scripts."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.failed_scripts: list[str] = []
        self._scripts: dict[int, str] = {}

    def on_link_complete(self, index: int) -> None:
        self.reporter.advance(1)

    def on_post_link_start(self, package_name: str, script_path: str) -> int:
        token = len(self._scripts)
        self._scripts[token] = package_name
        self.reporter.message(f"Running the post-link script of {package_name}")
        return token

    def on_post_link_complete(self, index: int, success: bool) -> None:
        if not success:
            self.failed_scripts.append(self._scripts.get(index, "?"))


def link_packages(
    records: list[RepoDataRecord],
    prefix: Path,
    cache_dir: Path,
    manifest: Manifest,
    reporter: Reporter,
    installed: list[PrefixRecord] | None = None,
    package_cache: PackageCache | None = None,
) -> None:
    bridge = _LinkReporter(reporter)  # type: ignore[abstract]  # rattler's no-op defaults
    reporter.start("Linking", len(records), unit="pkg")
    try:
        with deferred():
            asyncio.run(
                rattler.install(
                    records,
                    prefix,
                    cache_dir=None if package_cache else cache_dir,
                    package_cache=package_cache,
                    platform=Subdir(manifest.platform),
                    installed_packages=installed or None,
                    execute_link_scripts=manifest.options.link_scripts,
                    show_progress=False,
                    reporter=bridge,
                )
            )
    except InstallError:
        raise
    except Exception as e:  # rattler's own error types carry the cause in their message
        raise LinkError(f"installing the packages failed: {one_line(e)}") from e
    finally:
        reporter.finish()
    if bridge.failed_scripts:
        raise LinkError(
            "the post-link script of "
            + ", ".join(sorted(set(bridge.failed_scripts)))
            + " failed; see the messages above"
        )


def finish_prefix(prefix: Path, manifest: Manifest, request: InstallRequest) -> None:
    """Make the prefix look like conda made it, then add activation scripts."""
    fix_conda_meta(prefix, manifest)
    write_history(prefix, manifest, request)
    write_activation_scripts(prefix, manifest.platform)
    write_uninstaller(prefix, manifest)
    write_marker(prefix, manifest)
    # rattler tags the prefix as a cache; an installed environment should be backed up
    (prefix / "CACHEDIR.TAG").unlink(missing_ok=True)


def fix_conda_meta(prefix: Path, manifest: Manifest) -> None:
    """Point each conda-meta record at the locked URL instead of the deleted staging folder."""
    by_file = {p.file_name: p for p in manifest.packages}
    for meta in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(meta.read_text(encoding="utf-8"))
        package = by_file.get(str(data.get("fn", "")))
        if package is None:
            continue
        data["url"] = package.url
        data["channel"] = package.channel
        data["extracted_package_dir"] = ""
        data["package_tarball_full_path"] = ""
        link = data.get("link")
        if isinstance(link, dict):
            link["source"] = ""  # the staging folder is gone; conda leaves the field empty too
        tmp = meta.with_suffix(".json.tmp")
        # no indent: only then does json use its C encoder (records list every file)
        tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, meta)


def write_history(prefix: Path, manifest: Manifest, request: InstallRequest) -> None:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"==> {now} <==",
        f"# cmd: {request.installer_name} --prefix {prefix}",
        f"# lockship version: {__version__}",
        f"# installer: {manifest.name} {manifest.version} ({manifest.platform})",
    ]
    for p in sorted(manifest.packages, key=lambda p: p.name):
        channel = p.channel.rstrip("/").rsplit("/", 1)[-1] or p.channel
        lines.append(f"+{channel}/{p.subdir}::{p.name}-{p.version}-{p.build}")
    lines.append(f"# update specs: {json.dumps(sorted(p.name for p in manifest.packages))}")
    history = prefix / "conda-meta" / "history"
    with open(history, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
