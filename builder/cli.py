"""``lockship``: the builder's command line, the only place in the builder that prints or exits."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NoReturn

from lockship.builder.build import BuildRequest, PlannedInstaller, build_installers, plan_builds
from lockship.builder.config import (
    Settings,
    command_line,
    describe_settings,
    merge_settings,
    read_config,
)
from lockship.builder.errors import BuildError, UsageError
from lockship.builder.network import NetworkOptions
from lockship.builder.options import parse_arguments
from lockship.builder.paths import default_cache_dir, host_platform
from lockship.builder.sources import Source
from lockship.builder.stubs import facts_path, stub_file_name
from lockship.stub import __version__
from lockship.stub.boundary import end_process, report_error
from lockship.stub.payload import PayloadError
from lockship.stub.progress import LineReporter, TqdmReporter


def _reporter(stream: IO[str]) -> TqdmReporter | LineReporter:
    return TqdmReporter(stream) if stream.isatty() else LineReporter(stream)


def run(argv: Sequence[str]) -> int:
    args = parse_arguments(argv)
    if args.command == "freeze-stub":
        return freeze_stub_command(args.output, unpacker=args.unpacker)
    return build_command(args)


def freeze_stub_command(output: str, *, unpacker: Path | None = None) -> int:
    """``lockship freeze-stub -o PATH``: freeze, then print the sidecar's content."""
    from lockship.builder.freeze import freeze_stub

    target = Path(output)
    if output.endswith(("/", os.sep)) or target.is_dir():
        target = target / stub_file_name(host_platform())
    started = time.monotonic()
    facts = freeze_stub(
        target,
        on_line=lambda line: print(line, file=sys.stderr, flush=True),
        unpacker=unpacker,
    )
    took = time.monotonic() - started
    print(f"Took {took:.0f} s; facts in {facts_path(target)}", file=sys.stderr)
    print(json.dumps(facts.to_json(), indent=2))
    return 0


def build_command(args: argparse.Namespace) -> int:
    settings = merge_settings(command_line(args), read_config(args.path))
    path = args.path if args.path is not None or settings.specs else Path()
    if settings.concurrency < 1 or settings.timeout < 1 or settings.retries < 0:
        raise UsageError("--concurrency and --timeout must be at least 1, --retries at least 0")
    if args.delta_version and not args.delta_from:
        raise UsageError("--delta-version only goes with --delta-from OLD")
    request = request_from(settings, args, path)
    if args.dry_run:
        print("settings:")
        for line in describe_settings(settings):
            print(line)
        print()
    reporter = _reporter(sys.stderr)
    plan = plan_builds(request, reporter)
    for warning in plan.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.dry_run:
        for planned in plan.installers:
            _print_plan(plan.source, planned)
        return 0
    results = build_installers(request, reporter, plan)
    for result in results:
        if result.image is not None:
            print(f"Image {result.image} ({result.manifest.platform})", file=sys.stderr)
        if not result.written:
            continue
        size = result.installer.stat().st_size
        manifest = result.manifest
        delta = manifest.delta
        carries = (
            f"; update of {delta.name} {delta.version} carrying {len(delta.carried)} of "
            f"{len(manifest.packages) + len(manifest.options.wheels)} packages and wheels"
            if delta
            else ""
        )
        print(
            f"Built {manifest.name} {manifest.version} for {manifest.platform}: "
            f"{len(manifest.packages)} packages ({result.downloaded} downloaded, "
            f"{result.from_cache} from cache), {size / 1e6:.1f} MB{carries}",
            file=sys.stderr,
        )
    for result in results:
        if result.written:
            print(result.installer)
    for image in dict.fromkeys(r.image for r in results if r.image is not None):
        print(image)
    return 0


def request_from(settings: Settings, args: argparse.Namespace, path: Path | None) -> BuildRequest:
    """The request for the effective ``settings`` and the options kept off the table."""
    link_scripts = settings.link_scripts
    return BuildRequest(
        lock_path=path,
        environment=settings.environment,
        platforms=() if settings.platforms == "all" else settings.platforms,
        all_platforms=settings.platforms == "all",
        output_dir=settings.output_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        name=settings.name,
        version=settings.version,
        stubs=settings.stubs,
        stub_dir=settings.stub_dir,
        concurrency=settings.concurrency,
        timeout=settings.timeout,
        retries=settings.retries,
        license=settings.license,
        post_install=settings.post_install,
        link_scripts=link_scripts is not False,
        allowed_link_scripts=link_scripts if isinstance(link_scripts, tuple) else None,
        pyc=not settings.no_pyc,
        default_prefix=settings.default_prefix,
        categories=settings.categories,
        specs=settings.specs,
        channels=settings.channels,
        inject=settings.inject,
        ignore_pypi_non_wheel=settings.ignore_pypi_non_wheel,
        network=NetworkOptions(
            auth_file=args.auth_file, mirrors=settings.mirrors, config=args.config
        ),
        dry_run=args.dry_run,
        sign_command=settings.sign_command,
        delta_from=args.delta_from,
        delta_version=args.delta_version,
        image=settings.image,
    )


def _print_plan(source: Source, plan: PlannedInstaller) -> None:
    env = plan.environment
    print(f"environment:  {env.environment} ({source.kind}: {source.path or 'specs'})")
    print(f"platform:     {env.platform}")
    print(f"installer:    {plan.output}")
    print(f"stub:         {plan.stub or 'not available locally (would be frozen or downloaded)'}")
    print(
        f"packages:     {len(env.records)} conda, {len(env.wheels)} PyPI wheels; "
        f"{plan.download_size / 1e6:.1f} MB; {plan.cached} from cache, "
        f"{plan.to_download} to download"
    )
    for record in sorted(env.records, key=lambda r: r.name.normalized):
        print(f"  {record.name.normalized} {record.version} {record.build}  {record.url}")
    for wheel in env.wheels:
        print(f"  {wheel.name} {wheel.version} (PyPI)  {wheel.location}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("ERROR: interrupted; no installer was written", file=sys.stderr)
        return 130
    except Exception as e:
        # payload errors are the format's, raised while the installer is laid out
        return report_error(
            e, program="build", header=f"lockship {__version__}", known=(BuildError, PayloadError)
        )


def entry() -> NoReturn:
    """The ``lockship`` command: run :func:`main`, then end the process with its exit code
    without the interpreter's teardown (see :func:`lockship.stub.boundary.end_process`)."""
    end_process(main())


if __name__ == "__main__":
    entry()
