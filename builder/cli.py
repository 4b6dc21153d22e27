"""``lockship``: the builder's command line, the only place in the builder that prints or exits."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NoReturn

from builder.build import BuildRequest, build_installer
from builder.errors import BuildError, UsageError
from builder.fetch import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_TIMEOUT
from builder.stubs import default_cache_dir, host_platform
from stub import __version__
from stub.cli import LineReporter, TqdmReporter
from stub.errors import InstallError


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see lockship {self.prog.split()[-1]} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="lockship",
        description="Build one-file offline installers for conda environments locked with pixi.",
    )
    parser.add_argument("--version", action="version", version=f"lockship {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    build = commands.add_parser(
        "build",
        help="build an installer from a lockfile",
        description="Read the locked conda packages of one environment and platform, download "
        "and verify them, and write <output-dir>/<name>-<version>-<platform>.sh. The last "
        "line printed is the installer's path.",
        epilog="Exit codes: 0 built, 1 failed (no installer left under the final name), "
        "2 usage error, 130 interrupted.",
    )
    build.add_argument(
        "path",
        nargs="?",
        default=".",
        type=Path,
        help="a pixi.lock, or a folder holding one (default: .)",
    )
    build.add_argument(
        "-e", "--environment", default="default", help='environment to ship (default: "default")'
    )
    build.add_argument(
        "-p",
        "--platform",
        default=None,
        help=f"target platform (default: this machine's, {host_platform()})",
    )
    build.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=Path("installers"),
        help="where to write the installer (default: installers/)",
    )
    build.add_argument(
        "--name",
        help="installer name (default: the workspace name from pixi.toml/pyproject.toml "
        "beside the lock, else the environment name)",
    )
    build.add_argument(
        "--version",
        dest="installer_version",
        metavar="VERSION",
        help="installer version (default: the workspace version, else 0.0.0)",
    )
    build.add_argument(
        "--stub", type=Path, help="use this frozen stub instead of finding or freezing one"
    )
    build.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"package download and stub cache (default: {default_cache_dir()})",
    )
    build.add_argument(
        "-j",
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"parallel downloads (default: {DEFAULT_CONCURRENCY})",
    )
    build.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a download request after this long (default: {DEFAULT_TIMEOUT})",
    )
    build.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"retry a failed download this often, with backoff (default: {DEFAULT_RETRIES})",
    )
    build.add_argument(
        "--license",
        type=Path,
        metavar="FILE",
        help="a license the installer shows and asks to accept (-b accepts it)",
    )
    build.add_argument(
        "--post-install",
        type=Path,
        metavar="SCRIPT",
        help="a script (.sh for Linux/macOS, .bat/.ps1 for Windows) the installer runs after "
        "installing, with PREFIX, INSTALLER_NAME, INSTALLER_VERSION, INSTALLER_PLATFORM and "
        "INSTALLER_UNATTENDED set; its failure fails the installation",
    )
    build.add_argument(
        "--no-link-scripts",
        action="store_true",
        help="do not run packages' post-link scripts at install time (the installer says so)",
    )
    build.add_argument(
        "--no-pyc", action="store_true", help="do not compile .pyc files at install time"
    )
    return parser


def _reporter(stream: IO[str]) -> TqdmReporter | LineReporter:
    return TqdmReporter(stream) if stream.isatty() else LineReporter(stream)


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.timeout < 1 or args.retries < 0:
        raise UsageError("--concurrency and --timeout must be at least 1, --retries at least 0")
    request = BuildRequest(
        lock_path=args.path,
        environment=args.environment,
        platform=args.platform or host_platform(),
        output_dir=args.output_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        name=args.name,
        version=args.installer_version,
        stub=args.stub,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        license=args.license,
        post_install=args.post_install,
        link_scripts=not args.no_link_scripts,
        pyc=not args.no_pyc,
    )
    result = build_installer(request, _reporter(sys.stderr))
    size = result.installer.stat().st_size
    print(
        f"Built {result.manifest.name} {result.manifest.version} for {request.platform}: "
        f"{len(result.manifest.packages)} packages ({result.downloaded} downloaded, "
        f"{result.from_cache} from cache), {size / 1e6:.1f} MB",
        file=sys.stderr,
    )
    print(result.installer)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except (BuildError, InstallError) as e:
        log = _write_log(e) if e.exit_code != 2 else None
        print(f"ERROR: {e}" + (f" (details: {log})" if log else ""), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ERROR: interrupted; no installer was written", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line on the console, the traceback in the log
        log = _write_log(e)
        print(f"ERROR: unexpected failure: {e!r} (details: {log})", file=sys.stderr)
        return 1


def _write_log(error: BaseException) -> Path | None:
    path = Path(tempfile.gettempdir()) / f"lockship-build-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"lockship {__version__}, argv={sys.argv!r}\n")
            traceback.print_exception(error, file=f)
    except OSError:
        return None
    return path


if __name__ == "__main__":
    sys.exit(main())
