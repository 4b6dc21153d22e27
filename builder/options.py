"""The builder's command-line options: ``lockship build`` and ``lockship freeze-stub``, with
their help texts (``builder/cli.py`` runs them)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lockship.builder.errors import UsageError
from lockship.builder.fetch import DEFAULT_CONCURRENCY, DEFAULT_RETRIES, DEFAULT_TIMEOUT
from lockship.builder.image.settings import add_image_arguments
from lockship.builder.paths import default_cache_dir, host_platform
from lockship.builder.stubs import stub_file_name
from lockship.stub import __version__


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, parsed; a :class:`UsageError` names the help to read.

    Arguments no command knows are found by the top parser: the error then points at the
    chosen command's help (``lockship build --help``), not at the top one.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = f"{parser.prog} {args.command}"
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see {command} --help)")
    return args


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
        description="Read the locked conda packages of an environment, download and verify\n"
        "them, and write one installer per platform:\n"
        "<output-dir>/<name>-<version>-<platform>.sh (.exe for Windows), plus SHA256SUMS.\n"
        "The installers' paths are the last lines printed.\n"
        "Options can also be kept in a [tool.lockship] table in pixi.toml or pyproject.toml\n"
        "beside the lock, or in a lockship.toml; the command line overrides them.",
        epilog="examples:\n"
        "  lockship build                                  # ./pixi.lock, this platform\n"
        "  lockship build app/pixi.lock -e prod -p linux-64 -p win-64\n"
        "  lockship build conda-lock.yml --all-platforms --category main\n"
        '  lockship build --spec "python 3.12.*" --spec numpy -c conda-forge -p osx-arm64\n'
        "  lockship build --inject dist/myapp-1.0-0.conda --license LICENSE -o dist/\n"
        "\n"
        "exit codes: 0 built, 1 failed (no installer left under the final name), "
        "2 usage error, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "path",
        nargs="?",
        default=None,
        type=Path,
        help="a pixi.lock or a folder holding one (default: .); also a conda-lock.yml, an "
        "@EXPLICIT file or an environment.yml",
    )
    build.add_argument(
        "-e",
        "--environment",
        metavar="NAME",
        help='environment to ship (default: "default")',
    )
    build.add_argument(
        "-p",
        "--platform",
        action="append",
        default=[],
        dest="platforms",
        metavar="PLATFORM",
        help=f"target platform, repeatable (default: this machine's, {host_platform()})",
    )
    build.add_argument(
        "--all-platforms",
        action="store_true",
        help="one installer for every platform the environment is locked for",
    )
    build.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
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
        "--stub",
        action="append",
        default=[],
        metavar="[PLATFORM=]PATH",
        help="use this frozen stub for PLATFORM (repeatable; a bare PATH means the target "
        "platform)",
    )
    build.add_argument(
        "--stub-dir",
        type=Path,
        metavar="DIR",
        help="a folder of stubs named lockship-stub-<platform>[.exe] (also $LOCKSHIP_STUB_DIR)",
    )
    build.add_argument(
        "--delta-from",
        type=Path,
        metavar="OLD",
        help="build a delta installer, NAME-VERSION-PLATFORM-from-OLDVERSION.sh/.exe, that "
        "carries only the packages and wheels not in OLD (the previous version's lock, a "
        "folder holding it, or its installer) and updates only a prefix holding exactly OLD",
    )
    build.add_argument(
        "--delta-version",
        metavar="VERSION",
        help="the version of --delta-from OLD when it is a lock without a workspace version",
    )
    inputs = build.add_argument_group("other inputs")
    inputs.add_argument(
        "--category",
        action="append",
        default=[],
        dest="categories",
        metavar="NAME",
        help="conda-lock category to ship, repeatable (default: main)",
    )
    inputs.add_argument(
        "--spec",
        action="append",
        default=[],
        dest="specs",
        metavar="SPEC",
        help='solve this spec at build time (repeatable, e.g. --spec "python 3.12.*")',
    )
    inputs.add_argument(
        "-c",
        "--channel",
        action="append",
        default=[],
        dest="channels",
        metavar="CHANNEL",
        help="channel for --spec or environment.yml solving (repeatable)",
    )
    inputs.add_argument(
        "--inject",
        action="append",
        default=[],
        type=Path,
        metavar="ARCHIVE",
        help="add a local .conda/.tar.bz2 package (repeatable; its dependencies must be "
        "locked), or a .whl that replaces the locked PyPI package of its name",
    )
    inputs.add_argument(
        "--ignore-pypi-non-wheel",
        action="store_true",
        help="leave out locked PyPI sdists and source packages (with a warning) instead of "
        "building them into wheels",
    )
    network = build.add_argument_group("network")
    network.add_argument(
        "--auth-file",
        type=Path,
        metavar="FILE",
        help="rattler/pixi authentication file (or $RATTLER_AUTH_FILE)",
    )
    network.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="ORIGINAL=MIRROR",
        help="download ORIGINAL's packages from MIRROR (repeatable)",
    )
    network.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a pixi/rattler config file whose [mirrors] to use",
    )
    build.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve everything and print the plan; download nothing, write no installer",
    )
    build.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help=f"package download and stub cache (default: {default_cache_dir()})",
    )
    build.add_argument(
        "-j",
        "--concurrency",
        type=int,
        metavar="N",
        help=f"parallel downloads (default: {DEFAULT_CONCURRENCY})",
    )
    build.add_argument(
        "--timeout",
        type=int,
        metavar="SECONDS",
        help=f"give up on a download request after this long (default: {DEFAULT_TIMEOUT})",
    )
    build.add_argument(
        "--retries",
        type=int,
        metavar="N",
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
        "--link-scripts",
        metavar="allow=NAME[,NAME]",
        type=_allow_list,
        help="only these packages may carry link scripts (post-link, pre-unlink): the build "
        "fails, naming them, "
        "if any other locked package has one",
    )
    build.add_argument(
        "--default-prefix",
        metavar="PATH",
        help="the installer's default -p (default: ~/NAME, %%LOCALAPPDATA%%\\NAME on Windows); "
        "~ and $VAR (%%VAR%% on Windows) are expanded on the installing machine",
    )
    build.add_argument(
        "--no-pyc", action="store_true", help="do not compile .pyc files at install time"
    )
    build.add_argument(
        "--sign-command",
        metavar="COMMAND",
        help="sign each Windows installer with COMMAND before it is moved into place and "
        "SHA256SUMS is written; {file} stands for the installer (e.g. 'signtool sign /fd "
        "SHA256 /a {file}'); runs through the shell",
    )
    add_image_arguments(build)
    freeze = commands.add_parser(
        "freeze-stub",
        help="freeze the installer stub for this machine with PyInstaller",
        description="Freeze the installer stub for this machine, with its sidecar OUTPUT.json "
        "(what CI publishes). Progress goes to stderr; the stub's facts (the sidecar's "
        "content) go to stdout as JSON.",
    )
    freeze.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help=f"the stub file to write, or a folder (DIR/) for {stub_file_name(host_platform())}",
    )
    freeze.add_argument(
        "--unpacker",
        metavar="PATH",
        type=Path,
        help="the pack's unpacker built for this platform: lockship-unpack, or on Windows "
        "lockship-launch.exe (default: compile builder/native's sources with $CC, else cc, "
        "on Windows gcc)",
    )
    return parser


def _allow_list(text: str) -> tuple[str, ...]:
    kind, _, names = text.partition("=")
    if kind != "allow" or not names.strip(","):
        raise argparse.ArgumentTypeError(f"takes allow=NAME[,NAME...], not {text!r}")
    return tuple(sorted({n.strip().lower() for n in names.split(",") if n.strip()}))
