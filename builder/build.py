"""The build pipeline: lockfile -> fetched, verified archives -> payload + stub -> installer."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from lockship.builder.archives.contents import inspect_archives, virtual_package_requirements
from lockship.builder.archives.validate import validate_archive
from lockship.builder.errors import BuildError, ChecksumMismatch, LockfileError, UsageError
from lockship.builder.fetch import FetchedPackage, cache_path, fetch_packages
from lockship.builder.glibc import GlibcFloor, check_stub_glibc, environment_floor
from lockship.builder.identity import Identity, check_name, check_version, choose_identity
from lockship.builder.inputs.model import PlatformEnvironment, Source
from lockship.builder.inputs.reader import InputOptions, inject_packages, open_input
from lockship.builder.inputs.specs import SpecRequest, solve_specs
from lockship.builder.network import make_client
from lockship.builder.output.checksums import update_checksums
from lockship.builder.output.delta import OldEnvironment, delta_file_name, delta_payload, read_old
from lockship.builder.output.extras import check_link_script_policy, extra_entries
from lockship.builder.output.installer import installer_file_name, write_installer_to
from lockship.builder.output.sbom import staged_sbom
from lockship.builder.output.signing import sign_installer
from lockship.builder.paths import host_platform
from lockship.builder.pypi.wheels import ship_wheels
from lockship.builder.settings import BuildRequest
from lockship.builder.stubs.facts import stub_facts
from lockship.builder.stubs.lookup import find_stubs
from lockship.stub import __version__
from lockship.stub.shared.boundary import atomic_path, file_sha256
from lockship.stub.shared.manifest import InstallerOptions, Manifest, PackageInfo
from lockship.stub.shared.progress import Reporter
from rattler import Client, RepoDataRecord

if TYPE_CHECKING:
    from lockship.builder.image.assembly import ImageBuild
    from lockship.builder.image.settings import ImageSettings

#: fields of rattler's record JSON that belong to where a file lives, not what it is
_LOCATION_FIELDS = ("fn", "url", "channel")


@dataclass(frozen=True)
class BuildResult:
    installer: Path
    manifest: Manifest
    downloaded: int
    from_cache: int
    sha256: str
    #: payload entry -> sha256 of every wheel of the environment (for the SBOM)
    wheel_sha256: dict[str, str] = field(default_factory=dict)
    #: False when only an image was asked for: ``installer`` names what was not written
    written: bool = True
    #: the image archive holding this platform's image
    image: Path | None = None


@dataclass(frozen=True)
class PreparedInstaller:
    """One platform's packages fetched and verified, and the manifest describing them."""

    output: Path
    manifest: Manifest
    #: payload entry -> file, for every package
    files: list[tuple[str, Path]]
    #: payload entry -> file, for every wheel
    wheels: list[tuple[str, Path]]
    extras: dict[str, tuple[str, Path]]
    downloaded: int
    from_cache: int


@dataclass(frozen=True)
class PlannedInstaller:
    """What a build would do for one platform (``--dry-run``)."""

    environment: PlatformEnvironment
    output: Path
    stub: Path | None
    download_size: int
    cached: int
    to_download: int
    #: the previous version a delta installer updates (``--delta-from``)
    base: OldEnvironment | None = None
    #: the oldest glibc the environment runs on (None for non-Linux platforms)
    glibc_floor: GlibcFloor | None = None
    #: the newest glibc the stub needs, from its sidecar (None: not Linux, or not known)
    stub_glibc: str | None = None


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


@dataclass(frozen=True)
class BuildPlan:
    """Everything resolved before anything is downloaded: the input, and per platform what to
    build; the client every download of the build goes through."""

    source: Source
    installers: tuple[PlannedInstaller, ...]
    client: Client
    #: the image archive to write (``--image``)
    image: Path | None = None

    @property
    def warnings(self) -> list[str]:
        """What the build leaves out, one line per platform (``--ignore-pypi-non-wheel``)."""
        return [
            f"leaving out PyPI packages that are not wheels ({p.environment.platform}): "
            + ", ".join(p.environment.skipped)
            for p in self.installers
            if p.environment.skipped
        ]


def open_request_source(request: BuildRequest, client: Client) -> Source:
    """The request's input, solved first if it is made of specs."""
    opened: Source | SpecRequest | None = None
    if request.path is not None:
        opened = open_input(request.path, input_options(request, client))
    if opened is not None and not isinstance(opened, SpecRequest):
        if request.settings.specs:
            raise UsageError("--spec cannot be combined with a lockfile; pass one or the other")
        return opened
    specs = (opened or SpecRequest(None, (), ())).extended(
        request.settings.specs, request.settings.channels
    )
    chosen = request.settings.platforms  # "all" of a solve is this machine's
    platforms = chosen if isinstance(chosen, tuple) and chosen else (host_platform(),)
    if request.settings.name:
        name = check_name(request.settings.name, request.settings.origin("name"))
    else:
        name = check_name(specs.name, "from the environment file") if specs.name else "env"
    version = request.settings.version or "0.0.0"
    check_version(version, request.settings.origin("version"))
    # solved into the cache; it joins the installers in the output folder only when they
    # are all built (build_installers), so a failed build leaves no lock there either
    lock_path = request.cache_dir / ("dry-run" if request.dry_run else "solved")
    lock_path /= f"{name}-{version}.pixi.lock"
    return solve_specs(
        specs, platforms, client=client, cache_dir=request.cache_dir, lock_path=lock_path
    )


def input_options(request: BuildRequest, client: Client) -> InputOptions:
    return InputOptions(
        cache_dir=request.cache_dir,
        client=client,
        environment=request.settings.environment,
        categories=request.settings.categories,
        ignore_non_wheels=request.settings.ignore_pypi_non_wheel,
        concurrency=request.settings.concurrency,
        retries=request.settings.retries,
    )


def choose_platforms(request: BuildRequest, source: Source) -> tuple[str, ...]:
    chosen = request.settings.platforms
    if isinstance(chosen, tuple):
        return chosen or (host_platform(),)
    if not source.platforms():
        raise LockfileError(f"{source.path} locks no platform for {request.settings.environment!r}")
    return source.platforms()


def plan_builds(request: BuildRequest, reporter: Reporter) -> BuildPlan:
    """Resolve everything that can fail before downloading: input, platforms, stubs."""
    client = make_client(request.network, timeout=request.settings.timeout)
    source = open_request_source(request, client)
    identity = _identity(request, source)
    name, version = identity.name, identity.version
    if request.delta_version is not None:
        check_version(request.delta_version, "from --delta-version")
    plans = []
    for platform in choose_platforms(request, source):
        environment = inject_packages(request.settings.inject, source.for_platform(platform))
        cached = [r for r in environment.records if cache_path(request.cache_dir, r).is_file()]
        file_name, base = installer_file_name(name, version, platform), None
        if request.delta_from is not None:
            base = read_old(
                request.delta_from,
                platform,
                name=name,
                version=request.delta_version,
                options=input_options(request, client),
            )
            file_name = delta_file_name(name, version, platform, base.version)
        plans.append(
            PlannedInstaller(
                environment=environment,
                output=request.settings.output_dir / file_name,
                stub=None,
                download_size=sum(r.size or 0 for r in environment.records),
                cached=len(cached),
                to_download=len(environment.records) - len(cached),
                base=base,
                glibc_floor=environment_floor(
                    platform,
                    environment.virtual_packages,
                    [d for r in environment.records for d in r.depends],
                    source.path.parent if source.path else None,
                ),
            )
        )
    # every platform's stub is found before any installer is written, so a missing one
    # never leaves installers for the other platforms behind
    image = request.settings.image
    only_image = image is not None and image.only
    stubs = find_stubs(
        [] if only_image else [p.environment.platform for p in plans],
        request.cache_dir,
        client=client,
        explicit=request.settings.stubs,
        stub_dir=request.settings.stub_dir,
        retries=request.settings.retries,
        on_freeze=reporter.message,
        dry_run=request.dry_run,
    )
    plans = [_with_stub(p, stubs.get(p.environment.platform), request) for p in plans]
    image_path = None
    if image is not None:
        from lockship.builder.image.assembly import image_file_name

        platforms = [p.environment.platform for p in plans]
        image_path = request.settings.output_dir / image_file_name(name, version, platforms)
    return BuildPlan(source, tuple(plans), client, image_path)


def _with_stub(
    plan: PlannedInstaller, stub: Path | None, request: BuildRequest
) -> PlannedInstaller:
    """``plan`` with its stub, checked against the environment's glibc floor."""
    platform = plan.environment.platform
    facts = stub_facts(stub, verify=False) if stub is not None else None
    needs = facts.glibc if facts and platform.startswith("linux-") else None
    if stub is not None:
        check_stub_glibc(
            platform,
            stub,
            needs,
            plan.glibc_floor,
            allow_newer=request.settings.allow_newer_glibc,
        )
    return replace(plan, stub=stub, stub_glibc=needs)


def build_installers(
    request: BuildRequest, reporter: Reporter, plan: BuildPlan | None = None
) -> list[BuildResult]:
    """Build every planned installer (and image); all or nothing.

    Each installer, image and SBOM is written to a temporary name; only when all of them are
    complete (and the image pushed, if asked) are they renamed into place, and then
    ``SHA256SUMS`` is updated. A failure on any platform leaves no file of this build under
    its final name.
    """
    plan = plan or plan_builds(request, reporter)
    results: list[BuildResult] = []
    sums: dict[Path, str] = {}
    settings = request.settings.image
    with ExitStack() as outputs:
        image = None
        if settings is not None:
            image = outputs.enter_context(_image_build(request, settings, plan))
        for planned in plan.installers:
            prepared = prepare_one(request, plan.source, planned, plan.client, reporter)
            if image is not None:
                image.add_platform(
                    prepared.manifest,
                    dict(prepared.files),
                    [(entry, path, file_sha256(path)) for entry, path in prepared.wheels],
                    reporter,
                )
            if settings is not None and settings.only:
                results.append(_image_only_result(prepared))
                continue
            partial = _open_output(outputs, planned.output)
            with open(partial, "wb") as out:
                result = write_one(request, planned, prepared, reporter, out)
                out.flush()
                os.fsync(out.fileno())
            if request.settings.sign_command and planned.output.suffix == ".exe":
                reporter.message(f"Signing {planned.output.name}")
                sha256 = sign_installer(request.settings.sign_command, partial, planned.output.name)
                result = replace(result, sha256=sha256)
            results.append(result)
            # the SBOM names the installer's final sha256: known now, after signing
            sbom = outputs.enter_context(
                staged_sbom(result.installer, result.manifest, result.sha256, result.wheel_sha256)
            )
            sums |= {result.installer: result.sha256, sbom.path: sbom.sha256}
        if image is not None:
            sums |= _write_image(outputs, request, image, results, reporter)
        solved = plan.source.solved_lock
        if solved is not None:  # the lock solved from --spec or an environment.yml
            partial = _open_output(outputs, request.settings.output_dir / solved.name, mode=0o644)
            shutil.copyfile(solved, partial)
        # leaving the block renames every installer, image, SBOM and solved lock into place
    update_checksums(request.settings.output_dir, sums)
    return results


@contextmanager
def _image_build(
    request: BuildRequest, settings: ImageSettings, plan: BuildPlan
) -> Iterator[ImageBuild]:
    """The image build for ``plan``'s platforms, its bases opened and checked; its work
    folder (beside the download cache, so linking can hard-link) removed afterwards."""
    from lockship.builder.image.assembly import ImageBuild, git_revision, source_date_epoch

    platforms = [p.environment.platform for p in plan.installers]
    source = plan.source
    request.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="image-", dir=request.cache_dir)).resolve()
    identity = _identity(request, source)
    try:
        build = ImageBuild(
            settings,
            identity.name,
            identity.version,
            platforms,
            work,
            epoch=source_date_epoch(os.environ),
            revision=git_revision(source.path.parent) if source.path else None,
            cache=request.cache_dir,
        )
        build.open_bases(platforms)
        yield build
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_image(
    outputs: ExitStack,
    request: BuildRequest,
    image: ImageBuild,
    results: list[BuildResult],
    reporter: Reporter,
) -> dict[Path, str]:
    """Write the image archive and its SBOMs to temporary names (renamed with the rest), and
    push it if asked; their sha256s."""
    from lockship.builder.image.assembly import image_file_name

    platforms = [i.platform for i in image.images]
    path = request.settings.output_dir / image_file_name(image.name, image.version, platforms)
    partial = _open_output(outputs, path, mode=0o644)
    reporter.message(f"Writing {path}")
    with open(partial, "wb") as out:
        _, sha256 = image.write(out)
        out.flush()
        os.fsync(out.fileno())
    sums = {path: sha256}
    for platform_image in image.images:
        for warning in platform_image.warnings:
            reporter.message(f"WARNING: {warning}")
    manifests = {r.manifest.platform: r for r in results}
    for platform_image in image.images:
        result = manifests[platform_image.platform]
        named = (
            path
            if len(platforms) == 1
            else path.with_name(f"{image.name}-{image.version}-{platform_image.platform}.oci.tar")
        )
        sbom = outputs.enter_context(
            staged_sbom(named, result.manifest, sha256, result.wheel_sha256, kind="OCI image")
        )
        sums[sbom.path] = sbom.sha256
    if image.push is not None:
        reporter.message(f"Pushing to {image.push}")
        sent = image.push_image()
        reporter.message(f"Pushed {image.push}: {sent / 1e6:.1f} MB of layers sent")
    for i, result in enumerate(results):
        results[i] = replace(result, image=path)
    return sums


def _image_only_result(prepared: PreparedInstaller) -> BuildResult:
    return BuildResult(
        installer=prepared.output,
        manifest=prepared.manifest,
        downloaded=prepared.downloaded,
        from_cache=prepared.from_cache,
        sha256="",
        wheel_sha256={entry: file_sha256(path) for entry, path in prepared.wheels},
        written=False,
    )


def _open_output(outputs: ExitStack, output: Path, mode: int = 0o755) -> Path:
    """A new temporary file for ``output``, renamed into place when ``outputs`` closes
    without an error (and removed otherwise)."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        return outputs.enter_context(atomic_path(output, mode=mode))
    except OSError as e:
        raise BuildError(f"cannot write the installer {output}: {e.strerror or e}") from e


def build_one(
    request: BuildRequest,
    source: Source,
    plan: PlannedInstaller,
    client: Client,
    reporter: Reporter,
    out: IO[bytes],
) -> BuildResult:
    """Fetch one platform's packages and write its installer into ``out``."""
    prepared = prepare_one(request, source, plan, client, reporter)
    return write_one(request, plan, prepared, reporter, out)


def prepare_one(
    request: BuildRequest,
    source: Source,
    plan: PlannedInstaller,
    client: Client,
    reporter: Reporter,
) -> PreparedInstaller:
    """Fetch and verify one platform's packages; the manifest that describes them."""
    environment = plan.environment
    platform = environment.platform
    records = sorted(environment.records, key=lambda r: (r.name.normalized, r.file_name))
    reporter.start(f"Downloading ({platform})", plan.download_size, unit="B")
    fetched = fetch_packages(
        records,
        request.cache_dir,
        client=client,
        concurrency=request.settings.concurrency,
        retries=request.settings.retries,
        on_done=lambda f: reporter.advance(f.record.size or 0),
    )
    wheels = ship_wheels(
        environment,
        request.cache_dir,
        base=source.path.parent if source.path else Path.cwd(),
        client=client,
        retries=request.settings.retries,
        on_build=reporter.message,
    )
    reporter.finish()
    fetched = [_with_sha256(f) for f in fetched]
    for f in fetched:
        validate_archive(f.path)
    facts = inspect_archives(f.path for f in fetched)
    depends = [d for r in records for d in r.depends]
    extras = extra_entries(request.settings.license, request.settings.post_install, platform)
    entries = {key: entry for key, (entry, _) in extras.items()}
    if source.solved_lock is not None:  # the lock lockship solved is shipped with it
        extras["solved_lock"] = ("lockship/pixi.lock", source.solved_lock)
        entries["solved_lock"] = "lockship/pixi.lock"
    names = {f.path.name: f.record.name.normalized for f in fetched}
    scripts: dict[str, list[str]] = {}
    for archive, script in facts.link_scripts:
        scripts.setdefault(names[archive], []).append(script)
    with_scripts = sorted(scripts)
    link_scripts = request.settings.link_scripts
    if link_scripts.run:
        check_link_script_policy(link_scripts.allowed, scripts)
    options = InstallerOptions(
        link_scripts=link_scripts.run,
        pyc=request.settings.pyc,
        link_script_packages=tuple(with_scripts),
        wheels=tuple(f"pypi/{w.path.name}" for w in wheels),
        built_wheels=tuple(f"pypi/{w.path.name}" for w in wheels if w.from_source),
        license=entries.get("license"),
        post_install=entries.get("post_install"),
        solved_lock=entries.get("solved_lock"),
        default_prefix=request.settings.default_prefix,
    )
    identity = _identity(request, source)
    manifest = Manifest(
        name=identity.name,
        version=identity.version,
        platform=platform,
        environment=environment.environment,
        lockship_version=__version__,
        packages=tuple(package_info(f.record, f) for f in fetched),
        max_prefix_length=facts.max_prefix_length,
        max_path_length=facts.max_path_length,
        installed_size=facts.installed_size + sum(w.path.stat().st_size * 3 for w in wheels),
        virtual_packages=virtual_package_requirements(depends),
        options=options,
        glibc=plan.stub_glibc,
    )
    return PreparedInstaller(
        output=plan.output,
        manifest=manifest,
        files=[(p.entry, f.path) for p, f in zip(manifest.packages, fetched, strict=True)],
        wheels=[(f"pypi/{w.path.name}", w.path) for w in wheels],
        extras=extras,
        downloaded=sum(not f.from_cache for f in fetched),
        from_cache=sum(f.from_cache for f in fetched),
    )


def write_one(
    request: BuildRequest,
    plan: PlannedInstaller,
    prepared: PreparedInstaller,
    reporter: Reporter,
    out: IO[bytes],
) -> BuildResult:
    """Write one platform's installer into ``out``."""
    if plan.stub is None:
        raise BuildError(f"internal error: no stub was found for {plan.environment.platform}")
    platform, manifest = plan.environment.platform, prepared.manifest
    files = prepared.files + prepared.wheels
    if plan.base is not None:
        manifest, files = delta_payload(plan.base, manifest, files)
    reporter.message(f"Writing {plan.output}")
    stub = stub_facts(plan.stub, verify=False)
    layout = write_installer_to(
        out,
        plan.output,
        plan.stub,
        manifest,
        files + list(prepared.extras.values()),
        glibc_min=stub.glibc if stub and platform.startswith("linux-") else None,
        # packages were verified as they entered the cache: their hashes are checked again
        # while they are written, in the same pass
        digests={p.entry: p.sha256 for p in manifest.carried_packages},
        stub_sha256=stub.sha256 if stub else None,
    )
    return BuildResult(
        installer=plan.output,
        manifest=manifest,
        downloaded=prepared.downloaded,
        from_cache=prepared.from_cache,
        sha256=layout.sha256,
        wheel_sha256={entry: file_sha256(path) for entry, path in prepared.wheels},
    )


def _with_sha256(fetched: FetchedPackage) -> FetchedPackage:
    """Cached files were verified when they entered the cache; records without a sha256 get one."""
    if fetched.sha256:
        return fetched
    sha = file_sha256(fetched.path)
    if fetched.record.sha256 and fetched.record.sha256.hex() != sha:
        raise ChecksumMismatch(fetched.record.file_name, fetched.record.sha256.hex(), sha)
    return FetchedPackage(fetched.record, fetched.path, sha, fetched.from_cache)


def _identity(request: BuildRequest, source: Source) -> Identity:
    settings = request.settings
    origins = (settings.origin("name"), settings.origin("version"))
    return choose_identity(settings.name, settings.version, source, origins=origins)
