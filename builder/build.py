"""The build pipeline: lockfile -> fetched, verified archives -> payload + stub -> installer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rattler import Client, RepoDataRecord

from builder.errors import BuildError, ChecksumMismatch
from builder.fetch import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FetchedPackage,
    fetch_packages,
    hash_file,
)
from builder.installer import installer_file_name, write_installer
from builder.lockfile import find_lockfile, read_locked_environment, read_workspace
from builder.packages import (
    check_archive_safety,
    inspect_archives,
    virtual_package_requirements,
)
from builder.stubs import required_glibc, resolve_stub
from stub import __version__
from stub.manifest import Manifest, PackageInfo
from stub.progress import Reporter

#: fields of rattler's record JSON that belong to where a file lives, not what it is
_LOCATION_FIELDS = ("fn", "url", "channel")


@dataclass(frozen=True)
class BuildRequest:
    lock_path: Path
    environment: str
    platform: str
    output_dir: Path
    cache_dir: Path
    name: str | None = None
    version: str | None = None
    stub: Path | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: int = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    license: Path | None = None
    post_install: Path | None = None
    link_scripts: bool = True
    pyc: bool = True


@dataclass(frozen=True)
class BuildResult:
    installer: Path
    manifest: Manifest
    downloaded: int
    from_cache: int


def package_info(record: RepoDataRecord, fetched: FetchedPackage) -> PackageInfo:
    data = json.loads(record.to_json())
    for key in _LOCATION_FIELDS:
        data.pop(key, None)
    data["sha256"] = fetched.sha256
    data["size"] = fetched.path.stat().st_size
    return PackageInfo(
        entry=f"{record.subdir}/{record.file_name}",
        file_name=record.file_name,
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        subdir=str(record.subdir),
        url=record.url,
        channel=str(record.channel or record.url.rsplit("/", 2)[0]),
        sha256=fetched.sha256,
        size=data["size"],
        record=data,
    )


def build_installer(request: BuildRequest, reporter: Reporter) -> BuildResult:
    lock_path = find_lockfile(request.lock_path)
    locked = read_locked_environment(lock_path, request.environment, request.platform)
    workspace = read_workspace(lock_path)
    name = request.name or workspace.name or request.environment
    version = request.version or workspace.version or "0.0.0"

    stub_path = resolve_stub(
        request.platform, request.cache_dir, explicit=request.stub, on_freeze=reporter.message
    )

    records = sorted(locked.records, key=lambda r: (r.name.normalized, r.file_name))
    reporter.start("Downloading", sum(r.size or 0 for r in records), unit="B")
    fetched = fetch_packages(
        records,
        request.cache_dir,
        client=Client(timeout=request.timeout),
        concurrency=request.concurrency,
        retries=request.retries,
        on_done=lambda f: reporter.advance(f.record.size or 0),
    )
    reporter.finish()
    fetched = [_with_sha256(f) for f in fetched]

    for f in fetched:
        check_archive_safety(f.path)
    facts = inspect_archives(f.path for f in fetched)
    depends = [d for r in records for d in r.depends]
    extras = extra_entries(request)
    options: dict[str, object] = {
        "link_scripts": request.link_scripts,
        "pyc": request.pyc,
        "link_script_packages": sorted(
            f.record.name.normalized for f in fetched if f.path.name in facts.with_link_scripts
        ),
    }
    for key, (entry, _) in extras.items():
        options[key] = entry
    manifest = Manifest(
        name=name,
        version=version,
        platform=request.platform,
        environment=request.environment,
        lockship_version=__version__,
        packages=tuple(package_info(f.record, f) for f in fetched),
        max_prefix_length=facts.max_prefix_length,
        installed_size=facts.installed_size,
        virtual_packages=virtual_package_requirements(depends),
        options=options,
    )
    output = request.output_dir / installer_file_name(name, version, request.platform)
    reporter.message(f"Writing {output}")
    write_installer(
        output,
        stub_path,
        manifest,
        [(p.entry, f.path) for p, f in zip(manifest.packages, fetched, strict=True)]
        + list(extras.values()),
        glibc_min=required_glibc(stub_path),
    )
    return BuildResult(
        installer=output,
        manifest=manifest,
        downloaded=sum(not f.from_cache for f in fetched),
        from_cache=sum(f.from_cache for f in fetched),
    )


def extra_entries(request: BuildRequest) -> dict[str, tuple[str, Path]]:
    """Manifest option -> (payload entry, file) for the license and the post-install script."""
    extras: dict[str, tuple[str, Path]] = {}
    if request.license is not None:
        if not request.license.is_file():
            raise BuildError(f"the license file {request.license} does not exist")
        extras["license"] = ("lockship/LICENSE.txt", request.license)
    if request.post_install is not None:
        script = request.post_install
        allowed = (".bat", ".ps1") if request.platform.startswith("win-") else (".sh",)
        if script.suffix not in allowed:
            raise BuildError(
                f"the post-install script for {request.platform} must end in "
                f"{' or '.join(allowed)}, not {script.name}"
            )
        if not script.is_file():
            raise BuildError(f"the post-install script {script} does not exist")
        extras["post_install"] = (f"lockship/post-install{script.suffix}", script)
    return extras


def _with_sha256(fetched: FetchedPackage) -> FetchedPackage:
    """Cached files were verified when they entered the cache; records without a sha256 get one."""
    if fetched.sha256:
        return fetched
    sha, _ = hash_file(fetched.path)
    if fetched.record.sha256 and fetched.record.sha256.hex() != sha:
        raise ChecksumMismatch(fetched.record.file_name, fetched.record.sha256.hex(), sha)
    return FetchedPackage(fetched.record, fetched.path, sha, fetched.from_cache)
