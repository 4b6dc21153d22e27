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
from lockship.builder.errors import BuildError, UsageError
from lockship.builder.network import NetworkOptions, parse_mirror
from lockship.builder.options import build_parser
from lockship.builder.paths import default_cache_dir, host_platform
from lockship.builder.sources import Source
from lockship.builder.stubs import facts_path, stub_file_name
from lockship.stub import __version__
from lockship.stub.boundary import end_process, report_error
from lockship.stub.payload import PayloadError
from lockship.stub.progress import LineReporter, TqdmReporter


def _reporter(stream: IO[str]) -> TqdmReporter | LineReporter:
    return TqdmReporter(stream) if stream.isatty() else LineReporter(stream)


def _stubs(values: Sequence[str], platforms: Sequence[str]) -> dict[str, Path]:
    stubs: dict[str, Path] = {}
    for value in values:
        platform, sep, path = value.partition("=")
        if sep and "/" not in platform and "\\" not in platform:
            stubs[platform] = Path(path)
            continue
        targets = list(platforms) or [host_platform()]
        if len(targets) != 1:
            raise UsageError("with several platforms, give stubs as --stub PLATFORM=PATH")
        stubs[targets[0]] = Path(value)
    return stubs


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "freeze-stub":
        return freeze_stub_command(args.output, compress=args.compress)
    return build_command(args)


def freeze_stub_command(output: str, *, compress: bool = False) -> int:
    """``lockship freeze-stub -o PATH``: freeze, then print the sidecar's content."""
    from lockship.builder.freeze import freeze_stub

    target = Path(output)
    if output.endswith(("/", os.sep)) or target.is_dir():
        target = target / stub_file_name(host_platform())
    started = time.monotonic()
    facts = freeze_stub(
        target, on_line=lambda line: print(line, file=sys.stderr, flush=True), compress=compress
    )
    took = time.monotonic() - started
    print(f"Took {took:.0f} s; facts in {facts_path(target)}", file=sys.stderr)
    print(json.dumps(facts.to_json(), indent=2))
    return 0


def build_command(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.timeout < 1 or args.retries < 0:
        raise UsageError("--concurrency and --timeout must be at least 1, --retries at least 0")
    mirrors: dict[str, list[str]] = {}
    for text in args.mirror:
        original, mirror = parse_mirror(text)
        mirrors.setdefault(original, []).append(mirror)
    path = args.path
    if path is None and not args.specs:
        path = Path()
    if args.delta_version and not args.delta_from:
        raise UsageError("--delta-version only goes with --delta-from OLD")
    request = BuildRequest(
        lock_path=path,
        environment=args.environment,
        platforms=tuple(dict.fromkeys(args.platforms)),
        all_platforms=args.all_platforms,
        output_dir=args.output_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        name=args.name,
        version=args.installer_version,
        stubs=_stubs(args.stub, args.platforms),
        stub_dir=args.stub_dir,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        license=args.license,
        post_install=args.post_install,
        link_scripts=not args.no_link_scripts,
        allowed_link_scripts=args.link_scripts,
        pyc=not args.no_pyc,
        categories=tuple(args.categories) or ("main",),
        specs=tuple(args.specs),
        channels=tuple(args.channels),
        inject=tuple(args.inject),
        ignore_pypi_non_wheel=args.ignore_pypi_non_wheel,
        network=NetworkOptions(auth_file=args.auth_file, mirrors=mirrors, config=args.config),
        dry_run=args.dry_run,
        sign_command=args.sign_command,
        delta_from=args.delta_from,
        delta_version=args.delta_version,
    )
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
        print(result.installer)
    return 0


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
