"""Every option of ``lockship build``, each declared once (see :mod:`lockship.builder.options`).

:class:`Settings` holds what describes the project's build: each field is a flag and a
``[tool.lockship]`` key. :class:`BuildRequest` holds the settings and what belongs to one run on
one machine (``--cache-dir``, ``--auth-file``, ``--config``, ``--dry-run``, ``--delta-from``,
``--delta-version``): flags only. :func:`build_parser` generates the command line from both;
:func:`merge_settings` lays the command line over a table over the defaults, recording where
each value came from.

To add an option: add a field here (``option(...)`` with its flags, default, kind and help),
use it, and give it its line in ``docs/builder.md`` (and the table example, if it has a key).
An image option is a field of :class:`~lockship.builder.image.settings.ImageSettings`, the
value of ``Settings.image`` (the ``[tool.lockship.image]`` table), declared the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from lockship.builder.errors import UsageError
from lockship.builder.image.settings import IMAGE, IMAGE_SWITCH, IMAGES, ImageSettings
from lockship.builder.network import NetworkOptions, parse_mirror
from lockship.builder.options import (
    BOOLEAN,
    NEGATED_BOOLEAN,
    PATH,
    PATHS,
    TEXT,
    TEXTS,
    Flag,
    Kind,
    add_options,
    declared,
    integer,
    option,
    read_path,
    read_string,
    read_strings,
    show_value,
)
from lockship.builder.paths import default_cache_dir, host_platform
from lockship.builder.stubs.facts import stub_file_name
from lockship.stub import __version__

if TYPE_CHECKING:
    from lockship.builder.config import BuildConfig

COMMAND_LINE = "command line"
DEFAULT = "default"
#: how usage errors name the help to read
BUILD_COMMAND = "lockship build"

# --- the kinds of the build's own options ----------------------------------------------------

Platforms = tuple[str, ...] | Literal["all"]


def _read_platforms(value: object, base: Path) -> Platforms:
    return "all" if value == "all" else tuple(dict.fromkeys(read_strings(value, base)))


PLATFORMS: Kind[Platforms] = Kind(
    'a list of platforms, or "all"',
    _read_platforms,
    lambda texts: tuple(dict.fromkeys(texts)),
    repeat=True,
)


@dataclass(frozen=True)
class LinkScripts:
    """Packages' post-link scripts: whether the installer runs them, and which packages may
    carry one (None: any)."""

    run: bool = True
    allowed: tuple[str, ...] | None = None

    @classmethod
    def allow(cls, names: Iterable[str]) -> LinkScripts:
        """Only these packages (names compared lower-case) may carry post-link scripts."""
        return cls(allowed=tuple(sorted({n.strip().lower() for n in names if n.strip()})))

    def __str__(self) -> str:
        return show_value(self.run if self.allowed is None else self.allowed)


def _read_link_scripts(value: object, base: Path) -> LinkScripts:
    if isinstance(value, bool):
        return LinkScripts(run=value)
    return LinkScripts.allow(read_strings(value, base))


def _parse_link_scripts(texts: Sequence[str]) -> LinkScripts:
    kind, _, names = texts[-1].partition("=")
    if kind != "allow" or not names.strip(", "):
        raise ValueError(f"takes allow=NAME[,NAME...], not {texts[-1]!r}")
    return LinkScripts.allow(names.split(","))


LINK_SCRIPTS = Kind(
    "true, false or a list of package names", _read_link_scripts, _parse_link_scripts
)

#: a bare ``--stub PATH`` is kept under this platform until the targets are known
_TARGET = ""


def _read_stubs(value: object, base: Path) -> dict[str, Path]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return {read_string(k, base): read_path(v, base) for k, v in value.items()}


def _parse_stubs(texts: Sequence[str]) -> dict[str, Path]:
    stubs: dict[str, Path] = {}
    for text in texts:
        platform, sep, path = text.partition("=")
        if sep and platform and "/" not in platform and "\\" not in platform:
            stubs[platform] = Path(path)
        else:
            stubs[_TARGET] = Path(text)
    return stubs


STUBS = Kind('a table of platform = "path"', _read_stubs, _parse_stubs, repeat=True)


def _add_mirror(mirrors: dict[str, list[str]], text: str) -> None:
    original, url = parse_mirror(text)
    mirrors.setdefault(original, []).append(url)


def _read_mirrors(value: object, base: Path) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise TypeError(value)
    mirrors: dict[str, list[str]] = {}
    for original, targets in value.items():
        for target in [targets] if isinstance(targets, str) else read_strings(targets, base):
            _add_mirror(mirrors, f"{read_string(original, base)}={read_string(target, base)}")
    return mirrors


def _parse_mirrors(texts: Sequence[str]) -> dict[str, list[str]]:
    mirrors: dict[str, list[str]] = {}
    for text in texts:
        _add_mirror(mirrors, text)
    return mirrors


MIRRORS = Kind('a table of "URL" = ["mirror URL", ...]', _read_mirrors, _parse_mirrors, repeat=True)

# --- the options -----------------------------------------------------------------------------

INPUTS = "other inputs"
NETWORK = "network"


@dataclass(frozen=True)
class Settings:
    """The effective build settings: each field is a flag and a ``[tool.lockship]`` key."""

    environment: str = option(
        "-e",
        "--environment",
        default="default",
        kind=TEXT,
        metavar="NAME",
        help='environment to ship (default: "%(default)s")',
    )
    #: a tuple of platforms (empty: this machine's), or "all" the environment is locked for
    platforms: Platforms = option(
        "-p",
        "--platform",
        default=(),
        kind=PLATFORMS,
        metavar="PLATFORM",
        help=f"target platform, repeatable (default: this machine's, {host_platform()})",
        switches=[
            Flag(
                ("--all-platforms",),
                "one installer for every platform the environment is locked for",
                const="all",
            )
        ],
    )
    name: str | None = option(
        "--name",
        default=None,
        kind=TEXT,
        help="installer name (default: the workspace name from pixi.toml/pyproject.toml "
        "beside the lock, else the environment name)",
    )
    version: str | None = option(
        "--version",
        default=None,
        kind=TEXT,
        metavar="VERSION",
        help="installer version (default: the workspace version, else 0.0.0)",
    )
    output_dir: Path = option(
        "-o",
        "--output-dir",
        default=Path("installers"),
        kind=PATH,
        metavar="DIR",
        help="where to write the installer (default: %(default)s/)",
    )
    license: Path | None = option(
        "--license",
        default=None,
        kind=PATH,
        metavar="FILE",
        help="a license the installer shows and asks to accept (-b accepts it)",
    )
    post_install: Path | None = option(
        "--post-install",
        default=None,
        kind=PATH,
        metavar="SCRIPT",
        help="a script (.sh for Linux/macOS, .bat/.ps1 for Windows) the installer runs after "
        "installing, with PREFIX, INSTALLER_NAME, INSTALLER_VERSION, INSTALLER_PLATFORM and "
        "INSTALLER_UNATTENDED set; its failure fails the installation",
    )
    link_scripts: LinkScripts = option(
        "--link-scripts",
        default=LinkScripts(),
        kind=LINK_SCRIPTS,
        metavar="allow=NAME[,NAME]",
        help="only these packages may carry link scripts (post-link, pre-unlink): the build "
        "fails, naming them, if any other locked package has one",
        switches=[
            Flag(
                ("--no-link-scripts",),
                "do not run packages' post-link scripts at install time (the installer says so)",
                const=LinkScripts(run=False),
            )
        ],
    )
    pyc: bool = option(
        default=True,
        kind=NEGATED_BOOLEAN,
        key="no-pyc",
        switches=[Flag(("--no-pyc",), "do not compile .pyc files at install time", const=False)],
    )
    #: the installer's default ``-p``; ``~`` and ``$VAR`` are expanded at install time
    default_prefix: str | None = option(
        "--default-prefix",
        default=None,
        kind=TEXT,
        metavar="PATH",
        help="the installer's default -p (default: ~/NAME, %%LOCALAPPDATA%%\\NAME on Windows); "
        "~ and $VAR (%%VAR%% on Windows) are expanded on the installing machine",
    )
    stubs: dict[str, Path] = option(
        "--stub",
        factory=dict,
        kind=STUBS,
        metavar="[PLATFORM=]PATH",
        help="use this frozen stub for PLATFORM (repeatable; a bare PATH means the target "
        "platform)",
    )
    stub_dir: Path | None = option(
        "--stub-dir",
        default=None,
        kind=PATH,
        metavar="DIR",
        help="a folder of stubs named lockship-stub-<platform>[.exe] (also $LOCKSHIP_STUB_DIR)",
    )
    mirrors: dict[str, list[str]] = option(
        "--mirror",
        factory=dict,
        kind=MIRRORS,
        metavar="ORIGINAL=MIRROR",
        help="download ORIGINAL's packages from MIRROR (repeatable)",
        group=NETWORK,
    )
    timeout: int = option(
        "--timeout",
        default=60,
        kind=integer(minimum=1, unit="seconds"),
        metavar="SECONDS",
        help="give up on a download request after this long (default: %(default)s)",
    )
    retries: int = option(
        "--retries",
        default=3,
        kind=integer(minimum=0),
        metavar="N",
        help="retry a failed download this often, with backoff (default: %(default)s)",
    )
    concurrency: int = option(
        "-j",
        "--concurrency",
        default=8,
        kind=integer(minimum=1),
        metavar="N",
        help="parallel downloads (default: %(default)s)",
    )
    categories: tuple[str, ...] = option(
        "--category",
        default=("main",),
        kind=TEXTS,
        metavar="NAME",
        help="conda-lock category to ship, repeatable (default: main)",
        group=INPUTS,
    )
    channels: tuple[str, ...] = option(
        "-c",
        "--channel",
        default=(),
        kind=TEXTS,
        metavar="CHANNEL",
        help="channel for --spec or environment.yml solving (repeatable)",
        group=INPUTS,
    )
    specs: tuple[str, ...] = option(
        "--spec",
        default=(),
        kind=TEXTS,
        metavar="SPEC",
        help='solve this spec at build time (repeatable, e.g. --spec "python 3.12.*")',
        group=INPUTS,
    )
    inject: tuple[Path, ...] = option(
        "--inject",
        default=(),
        kind=PATHS,
        metavar="ARCHIVE",
        help="add a local .conda/.tar.bz2 package (repeatable; its dependencies must be "
        "locked), or a .whl that replaces the locked PyPI package of its name",
        group=INPUTS,
    )
    ignore_pypi_non_wheel: bool = option(
        default=False,
        kind=BOOLEAN,
        switches=[
            Flag(
                ("--ignore-pypi-non-wheel",),
                "leave out locked PyPI sdists and source packages (with a warning) instead of "
                "building them into wheels",
                const=True,
            )
        ],
        group=INPUTS,
    )
    #: build even if a Linux stub needs a newer glibc than the environment's floor
    allow_newer_glibc: bool = option(
        default=False,
        kind=BOOLEAN,
        switches=[
            Flag(
                ("--allow-newer-glibc",),
                "build even if a Linux stub needs a newer glibc than the environment's floor "
                "(the lock's __glibc, else pixi's 2.28): its installers then refuse older "
                "machines the environment runs on",
                const=True,
            )
        ],
    )
    #: a command signing each Windows installer, ``{file}`` standing for its path
    sign_command: str | None = option(
        "--sign-command",
        default=None,
        kind=TEXT,
        metavar="COMMAND",
        help="sign each Windows installer with COMMAND before it is moved into place and "
        "SHA256SUMS is written; {file} stands for the installer (e.g. 'signtool sign /fd "
        "SHA256 /a {file}'); runs through the shell",
    )
    #: an OCI image of the environment, beside the installers or instead of them; its own
    #: options are the fields of :class:`ImageSettings`, and any of them asks for an image
    image: ImageSettings | None = option(
        default=None, kind=IMAGE, switches=[IMAGE_SWITCH], group=IMAGES
    )
    #: table key -> where its value came from: "command line", the table's label, "default"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def origin(self, name: str) -> str:
        """Where field ``name``'s value came from, as errors say it: ``from --name``, ``from
        name in pixi.toml [tool.lockship]`` or ``by default``."""
        (d,) = [d for d in declared(Settings) if d.name == name]
        source = self.sources.get(str(d.key), DEFAULT)
        if source == COMMAND_LINE:
            return f"from {d.option.flags[0].name}"
        return "by default" if source == DEFAULT else f"from {d.key} in {source}"


@dataclass(frozen=True)
class BuildRequest:
    """One run of ``lockship build``: the settings, the input, and what belongs to this run on
    this machine rather than to the project (flags only, no table keys)."""

    settings: Settings = field(default_factory=Settings)
    #: the lockfile or folder (None: solve ``settings.specs``)
    path: Path | None = None
    cache_dir: Path = option(
        "--cache-dir",
        factory=default_cache_dir,
        kind=PATH,
        metavar="DIR",
        key=None,
        help="package download and stub cache (default: %(default)s)",
    )
    auth_file: Path | None = option(
        "--auth-file",
        default=None,
        kind=PATH,
        metavar="FILE",
        key=None,
        help="rattler/pixi authentication file (or $RATTLER_AUTH_FILE)",
        group=NETWORK,
    )
    config: Path | None = option(
        "--config",
        default=None,
        kind=PATH,
        metavar="FILE",
        key=None,
        help="a pixi/rattler config file whose [mirrors] to use",
        group=NETWORK,
    )
    dry_run: bool = option(
        default=False,
        kind=BOOLEAN,
        key=None,
        switches=[
            Flag(
                ("--dry-run",),
                "resolve everything and print the plan; download nothing, write no installer",
                const=True,
            )
        ],
    )
    #: the previous version (lock or installer): build a delta installer from it
    delta_from: Path | None = option(
        "--delta-from",
        default=None,
        kind=PATH,
        metavar="OLD",
        key=None,
        help="build a delta installer, NAME-VERSION-PLATFORM-from-OLDVERSION.sh/.exe, that "
        "carries only the packages and wheels not in OLD (the previous version's lock, a "
        "folder holding it, or its installer) and updates only a prefix holding exactly OLD",
    )
    #: the previous version's version, when ``delta_from`` is a lock
    delta_version: str | None = option(
        "--delta-version",
        default=None,
        kind=TEXT,
        metavar="VERSION",
        key=None,
        help="the version of --delta-from OLD when it is a lock without a workspace version",
    )

    def __post_init__(self) -> None:
        if self.delta_version is not None and self.delta_from is None:
            raise UsageError("--delta-version only goes with --delta-from OLD")

    @property
    def network(self) -> NetworkOptions:
        return NetworkOptions(self.auth_file, self.settings.mirrors, self.config)


# --- merging and showing ---------------------------------------------------------------------


def merge_settings(
    given: Mapping[str, Any],
    config: BuildConfig | None,
    image: Mapping[str, Any] | None = None,
) -> Settings:
    """The command line's values (by field name) over the table's over the defaults, with
    their sources; a bare ``--stub PATH`` goes to the one target platform. ``image`` holds
    the image options given on the command line (by :class:`ImageSettings` field name): they
    override the image table's key by key."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for d in declared(Settings):
        if d.name in given:
            values[d.name], sources[str(d.key)] = given[d.name], COMMAND_LINE
        elif config is not None and d.name in config.values:
            values[d.name], sources[str(d.key)] = config.values[d.name], config.label
        else:
            sources[str(d.key)] = DEFAULT
    stubs = values.get("stubs", {})
    if _TARGET in stubs:
        platforms = values.get("platforms", ())
        targets = [host_platform()] if platforms in ((), "all") else list(platforms)
        if len(targets) != 1:
            raise UsageError("with several platforms, give stubs as --stub PLATFORM=PATH")
        values["stubs"] = {targets[0] if p == _TARGET else p: path for p, path in stubs.items()}
    table_image = config.values.get("image") if config is not None else None
    if image or "image" in given or table_image is not None:
        values["image"] = replace(table_image or ImageSettings(), **(image or {}))
        sources["image"] = COMMAND_LINE if image or "image" in given else str(sources["image"])
        for d in declared(ImageSettings):
            if image and d.name in image:
                sources[f"image.{d.key}"] = COMMAND_LINE
            elif config is not None and getattr(table_image, d.name, d.default) != d.default:
                sources[f"image.{d.key}"] = config.label
    return Settings(**values, sources=sources)


def describe_settings(settings: Settings) -> list[str]:
    """One line per setting: ``key = value  (source)``, for ``--dry-run``; a table of options
    (``image``) one line per key (``image.base = ...``)."""
    lines = []
    for d in declared(Settings):
        value = getattr(settings, d.name)
        inner = declared(type(value)) if is_dataclass(value) else []
        shown = [(f"{d.key}.{i.key}", i.option.kind.show(getattr(value, i.name))) for i in inner]
        for key, text in shown or [(str(d.key), d.option.kind.show(value))]:
            lines.append(f"  {key} = {text}  ({settings.sources.get(key, DEFAULT)})")
    return lines


# --- the command line ------------------------------------------------------------------------


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
        "beside the lock, or in a lockship.toml (all but --cache-dir, --auth-file, --config,\n"
        "--dry-run and --delta-*); the command line overrides them.",
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
    add_options(build, Settings, BuildRequest, ImageSettings, groups=[INPUTS, NETWORK, IMAGES])
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
        "lockship-launch.exe (default: compile builder/stubs/native's sources with $CC, else cc, "
        "on Windows gcc)",
    )
    freeze.add_argument(
        "--portable",
        action="store_true",
        help="freeze with the portable Python (CPython compiled with zig for glibc 2.17, built "
        "once into the cache), as lockship build does on Linux; default: with this Python",
    )
    freeze.add_argument(
        "-p",
        "--platform",
        help="with --portable: linux-64 or linux-aarch64 (default: this machine's); another "
        "CPU's stub is frozen under qemu-user through binfmt_misc",
    )
    return parser
