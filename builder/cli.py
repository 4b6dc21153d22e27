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

from lockship.builder.build import PlannedInstaller, build_installers, plan_builds
from lockship.builder.config import read_config
from lockship.builder.errors import BuildError, UsageError
from lockship.builder.image.settings import ImageSettings
from lockship.builder.inputs.model import Source
from lockship.builder.options import given_on_command_line
from lockship.builder.paths import host_platform
from lockship.builder.settings import (
    BUILD_COMMAND,
    BuildRequest,
    Settings,
    describe_settings,
    merge_settings,
    parse_arguments,
)
from lockship.builder.stubs.facts import facts_path, stub_file_name
from lockship.builder.stubs.portable import PORTABLE_GLIBC, portable_supported
from lockship.stub import __version__
from lockship.stub.shared.boundary import end_process, report_error
from lockship.stub.shared.payload import PayloadError
from lockship.stub.shared.progress import LineReporter, TqdmReporter


def _reporter(stream: IO[str]) -> TqdmReporter | LineReporter:
    return TqdmReporter(stream) if stream.isatty() else LineReporter(stream)


def run(argv: Sequence[str]) -> int:
    args = parse_arguments(argv)
    if args.command == "freeze-stub":
        return freeze_stub_command(
            args.output, unpacker=args.unpacker, portable=args.portable, platform=args.platform
        )
    return build_command(args)


def freeze_stub_command(
    output: str,
    *,
    unpacker: Path | None = None,
    portable: bool = False,
    platform: str | None = None,
) -> int:
    """``lockship freeze-stub -o PATH``: freeze, then print the sidecar's content."""
    from lockship.builder.stubs.freeze import freeze_stub
    from lockship.builder.stubs.portable import freeze_portable_stub

    target = Path(output)
    if output.endswith(("/", os.sep)) or target.is_dir():
        target = target / stub_file_name(platform or host_platform())
    started = time.monotonic()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if portable and unpacker is not None:
        raise UsageError("--portable compiles its own unpacker: leave out --unpacker")
    if platform is not None and not portable:
        raise UsageError("--platform goes with --portable (this Python freezes for this machine)")
    if portable:
        facts = freeze_portable_stub(target, on_line=say, platform=platform)
    else:
        facts = freeze_stub(target, on_line=say, unpacker=unpacker)
    took = time.monotonic() - started
    print(f"Took {took:.0f} s; facts in {facts_path(target)}", file=sys.stderr)
    print(json.dumps(facts.to_json(), indent=2))
    return 0


def build_command(args: argparse.Namespace) -> int:
    request = build_request(args)
    if request.dry_run:
        print("settings:")
        for line in describe_settings(request.settings):
            print(line)
        print()
    reporter = _reporter(sys.stderr)
    plan = plan_builds(request, reporter)
    for warning in plan.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if request.dry_run:
        only_image = request.settings.image is not None and request.settings.image.only
        for planned in plan.installers:
            _print_plan(plan.source, planned, only_image=only_image)
        if plan.image is not None:
            print(f"image:        {plan.image}")
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


def build_request(args: argparse.Namespace) -> BuildRequest:
    """The request of ``lockship build ARGS``: the command line over the settings table beside
    the input over the defaults, and the run's own options."""
    given = given_on_command_line(args, Settings, BUILD_COMMAND)
    image = given_on_command_line(args, ImageSettings, BUILD_COMMAND)
    settings = merge_settings(given, read_config(args.path), image)
    path = args.path if args.path is not None or settings.specs else Path()
    run = given_on_command_line(args, BuildRequest, BUILD_COMMAND)
    return BuildRequest(settings=settings, path=path, **run)


def _print_plan(source: Source, plan: PlannedInstaller, *, only_image: bool = False) -> None:
    env = plan.environment
    print(f"environment:  {env.environment} ({source.kind}: {source.path or 'specs'})")
    print(f"platform:     {env.platform}")
    if only_image:
        print("installer:    none (--image-only)")
    else:
        print(f"installer:    {plan.output}")
        stub = plan.stub or "not available locally (would be frozen or downloaded)"
        print(f"stub:         {stub}")
        if plan.glibc_floor is not None:
            needs = plan.stub_glibc or (
                f"{PORTABLE_GLIBC[env.platform]} (the portable stub it would make)"
                if portable_supported(env.platform)
                else "? (no stub here yet)"
            )
            print(
                f"glibc:        the installer needs >= {needs}; the environment's floor is "
                f"{plan.glibc_floor.version} ({plan.glibc_floor.origin})"
            )
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
    without the interpreter's teardown (see :func:`lockship.stub.shared.boundary.end_process`)."""
    end_process(main())


if __name__ == "__main__":
    entry()
