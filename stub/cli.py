"""The installer's command line: the only place in the stub that prints, prompts or exits."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from lockship.stub import __version__
from lockship.stub.boundary import (
    SHA256SUMS,
    end_process,
    file_sha256,
    parse_checksums,
    report_error,
)
from lockship.stub.console import (
    check_path_lengths,
    decide_interaction,
    long_paths_enabled,
    owns_console,
    relaunch_environment,
    relaunched,
    restore_environment,
    stdin_is_terminal,
    temporary_base,
)
from lockship.stub.errors import InstallError, PlatformMismatch, UsageError
from lockship.stub.manifest import Manifest
from lockship.stub.payload import (
    FORMAT_VERSION,
    Payload,
    PayloadError,
    iter_entry,
    read_payload,
    verify_payload,
)
from lockship.stub.prefix import normalize_prefix
from lockship.stub.progress import LineReporter, TqdmReporter
from lockship.stub.signals import install_handlers

#: set by the shell header of .sh installers: the installer file and the folder of the stub copy
INSTALLER_ENV = "LOCKSHIP_INSTALLER"
STUB_DIR_ENV = "LOCKSHIP_STUB_DIR"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _build_parser(prog: str, manifest: Manifest | None) -> argparse.ArgumentParser:
    name = manifest.name if manifest else "NAME"
    what = f"{manifest.name} {manifest.version} ({manifest.platform})" if manifest else "an env"
    default_prefix = _default_prefix(manifest) if manifest else "~/NAME"
    parser = _ArgumentParser(
        prog=prog,
        description=f"Install {what}: a conda environment built by lockship {__version__}.",
        epilog="Exit codes: 0 installed, 1 failed (nothing left behind), 2 usage error, "
        "130 interrupted. On failure the error names a log file with the details.",
    )
    parser.add_argument(
        "-p", "--prefix", help=f"install into this folder (default: {default_prefix})"
    )
    parser.add_argument(
        "-b",
        "--batch",
        action="store_true",
        help="never ask anything (unattended install); this accepts the license, if any",
    )
    parser.add_argument(
        "-f", "--force", action="store_true", help="install even if PREFIX exists and is not empty"
    )
    parser.add_argument(
        "-u",
        "--update",
        action="store_true",
        help="update PREFIX made by an earlier installer of the same name: changed packages are "
        "replaced, packages no longer locked are removed",
    )
    parser.add_argument(
        "--info", action="store_true", help="print what this installer holds; install nothing"
    )
    parser.add_argument("--json", action="store_true", help="with --info: print JSON")
    parser.add_argument(
        "--check",
        action="store_true",
        help="verify the whole installer (every package's sha256); install nothing",
    )
    parser.add_argument(
        "--extract",
        metavar="DIR",
        help="write the packages as a local channel plus environment.yml and pixi.lock into DIR "
        "(for micromamba, conda or pixi); install nothing",
    )
    parser.add_argument(
        "--no-post-install",
        action="store_true",
        help="do not run the post-install script the installer carries",
    )
    parser.add_argument(
        "--version", action="store_true", help=f"print the version of {name} and of lockship"
    )
    parser.add_argument("--installer", help=argparse.SUPPRESS)
    return parser


def _default_prefix(manifest: Manifest) -> str:
    if manifest.platform.startswith("win-"):
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        return str(Path(base) / manifest.name)
    return str(Path("~").expanduser() / manifest.name)


def _installer_path(argv: Sequence[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--installer" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--installer="):
            return Path(arg.split("=", 1)[1])
    env = os.environ.get(INSTALLER_ENV)
    if env:
        return Path(env)
    return Path(sys.executable)


def _machine_platform() -> str:
    override = os.environ.get("LOCKSHIP_PLATFORM_OVERRIDE")
    if override:
        return override
    from rattler import Subdir

    return str(Subdir.current())


# --- the command ------------------------------------------------------------------------


def _describe(manifest: Manifest, payload: Payload) -> str:
    lines = [
        f"{manifest.name} {manifest.version}",
        f"platform:          {manifest.platform}",
        f"environment:       {manifest.environment}",
        f"built by:          lockship {manifest.lockship_version}",
        f"payload format:    {FORMAT_VERSION}",
        f"packages:          {len(manifest.packages)} "
        f"({manifest.total_size / 1e6:.1f} MB download, "
        f"{manifest.installed_size / 1e6:.1f} MB installed)",
        "",
    ]
    width = max((len(p.name) for p in manifest.packages), default=4)
    for p in sorted(manifest.packages, key=lambda p: p.name):
        lines.append(f"  {p.name:<{width}}  {p.version:<12} {p.build:<20} {p.size:>12,d} B")
    return "\n".join(lines)


def _confirm(question: str, default: bool = True) -> bool:
    sys.stdout.write(question)
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        return False
    answer = answer.strip().lower()
    if not answer:
        return default
    return answer in ("y", "yes")


def run(argv: Sequence[str], prog: str) -> int:
    """Parse ``argv``, do the work, return the exit code; raises InstallError on failure."""
    if any(a in ("-h", "--help") for a in argv):
        manifest = _try_manifest(argv)
        _build_parser(prog, manifest).print_help()
        return 0
    payload = read_payload(_installer_path(argv))
    manifest = Manifest.from_dict(payload.metadata)
    args = _build_parser(prog, manifest).parse_args(argv)
    if args.json and not args.info:
        raise UsageError("--json only goes with --info (see --help)")
    if args.version:
        print(
            f"{manifest.name} {manifest.version} (installer built by lockship "
            f"{manifest.lockship_version}; installer program {__version__})"
        )
        return 0
    if args.info:
        print(json.dumps(_info(manifest), indent=2) if args.json else _describe(manifest, payload))
        return 0
    reporter = TqdmReporter(sys.stderr) if sys.stderr.isatty() else LineReporter(sys.stderr)
    if args.check:
        verify_payload(payload)
        print(f"OK: {payload.path.name} is complete ({len(payload.entries)} entries verified)")
        listed = _listed_sha256(payload.path)
        if listed is not None:
            actual = file_sha256(payload.path)
            if actual != listed:
                raise InstallError(
                    f"{payload.path.name} does not match {payload.path.parent / SHA256SUMS} "
                    f"(sha256 {actual}, listed {listed}); download it again"
                )
            print(f"OK: its sha256 {actual} matches SHA256SUMS")
        return 0
    if args.extract:
        from lockship.stub.extract import (
            extract_channel,
        )  # imported late: --help/--info start faster

        target = normalize_prefix(args.extract)
        extract_channel(payload, manifest, target, reporter)
        print(f"Extracted {manifest.name} {manifest.version} into {target} (see README.txt there)")
        return 0
    machine = _machine_platform()
    if machine != manifest.platform:
        raise PlatformMismatch(manifest.platform, machine)
    prefix = normalize_prefix(args.prefix or _default_prefix(manifest))
    windows = manifest.platform.startswith("win-")
    check_path_lengths(
        prefix, manifest.max_path_length, windows=windows, long_paths=long_paths_enabled()
    )
    interaction = decide_interaction(
        batch=args.batch, stdin_tty=stdin_is_terminal(), owns_console=_owns_console()
    )
    interactive = interaction.ask
    # late: rattler is slow to import
    from lockship.stub.destination import PrefixDestination
    from lockship.stub.install import install
    from lockship.stub.preflight import InstallRequest, preflight
    from lockship.stub.source import PayloadSource

    request = InstallRequest(
        prefix=prefix,
        force=args.force,
        update=args.update,
        run_post_install=not args.no_post_install,
        unattended=not interactive,
        installer_name=prog,
    )
    plan = preflight(manifest, request)
    license_entry = manifest.options.license
    if license_entry and not args.batch:
        if not interactive:
            raise InstallError(
                "this installer has a license that must be accepted; read it with --info and "
                "accept it by running with -b, or run the installer on a terminal"
            )
        text = b"".join(iter_entry(payload, payload.entry(str(license_entry))))
        print(text.decode("utf-8", "replace"))
        if not _confirm("Do you accept the license terms? [yes/no] ", default=False):
            print("The license was not accepted; nothing installed.")
            return 1
    if interactive:
        print(_describe(manifest, payload))
        print()
        if not _confirm(f"Install {manifest.name} {manifest.version} into {prefix}? [Y/n] "):
            print("Nothing installed.")
            return 1
    if not manifest.options.link_scripts:
        reporter.message(
            "Package post-link scripts will not run: this installer was built with "
            "--no-link-scripts"
        )
    unpacked = getattr(sys, "_MEIPASS", None)
    base = temporary_base(
        prefix,
        windows=windows,
        frozen=bool(getattr(sys, "frozen", False)),
        relaunched=relaunched(),
        unpacked_in=Path(unpacked).parent if unpacked else None,
    )
    if base is not None:
        return _relaunch_next_to_prefix(base, argv)
    verb = "Updating" if args.update and prefix.exists() else "Installing"
    reporter.message(
        f"{verb} {manifest.name} {manifest.version} ({len(manifest.packages)} packages) "
        f"into {prefix}"
    )
    install(PayloadSource(payload, manifest), PrefixDestination(plan), reporter)
    windows = manifest.platform.startswith("win-")
    activate = prefix / ("activate.bat" if windows else "activate.sh")
    how = str(activate) if windows else f"source {activate}"
    print(f"Installed {manifest.name} {manifest.version} into {prefix} (activate: {how})")
    return 0


def _listed_sha256(installer: Path) -> str | None:
    """The installer's line in a SHA256SUMS file next to it (written by lockship build)."""
    try:
        text = (installer.parent / SHA256SUMS).read_text(encoding="utf-8")
    except OSError:
        return None
    return parse_checksums(text).get(installer.name)


def _owns_console() -> bool:
    return owns_console() and not relaunched()


def _relaunch_next_to_prefix(base: Path, argv: Sequence[str]) -> int:
    """Run the installer again with its temporary files next to the prefix, not in %TEMP%.

    Antivirus scanning of %TEMP% is a known cause of slow or failed installs; the questions have
    been answered already, so the second run is unattended (-b).
    """
    folder = Path(tempfile.mkdtemp(prefix=".lockship-tmp-", dir=base))
    # an error's log must outlive the folder removed below
    env = relaunch_environment(folder, log_dir=tempfile.gettempdir())
    try:
        return subprocess.run([sys.executable, *argv, "-b"], env=env, check=False).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _info(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "version": manifest.version,
        "platform": manifest.platform,
        "environment": manifest.environment,
        "lockship_version": manifest.lockship_version,
        "payload_format": FORMAT_VERSION,
        "download_size": manifest.total_size,
        "installed_size": manifest.installed_size,
        "virtual_packages": list(manifest.virtual_packages),
        "post_link_scripts": sorted(
            p.name for p in manifest.packages if p.name in manifest.options.link_script_packages
        ),
        "link_scripts_enabled": manifest.options.link_scripts,
        "pypi_wheels": list(manifest.options.wheels),
        "license": manifest.options.license is not None,
        "post_install": manifest.options.post_install is not None,
        "packages": [
            {
                "name": p.name,
                "version": p.version,
                "build": p.build,
                "subdir": p.subdir,
                "size": p.size,
                "sha256": p.sha256,
                "url": p.url,
            }
            for p in sorted(manifest.packages, key=lambda p: p.name)
        ],
    }


def _try_manifest(argv: Sequence[str]) -> Manifest | None:
    try:
        return Manifest.from_dict(read_payload(_installer_path(argv)).metadata)
    except InstallError:
        return None


@contextmanager
def _stub_dir_cleanup() -> Iterator[None]:
    try:
        yield
    finally:
        stub_dir = os.environ.get(STUB_DIR_ENV)
        if stub_dir and Path(stub_dir).name.startswith("lockship-"):
            shutil.rmtree(stub_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    restore_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = os.environ.get("LOCKSHIP_PROG") or Path(sys.argv[0]).name
    install_handlers()
    batch = any(a in ("-b", "--batch") for a in argv)
    pause = decide_interaction(
        batch=batch, stdin_tty=stdin_is_terminal(), owns_console=_owns_console()
    ).pause_at_exit
    with _stub_dir_cleanup():
        code = _run_reporting_errors(argv, prog)
    if pause:
        outcome = "finished" if code == 0 else f"FAILED (exit code {code})"
        print(f"\nThe installer {outcome}. Press Enter to close this window.")
        with suppress(OSError, KeyboardInterrupt):
            sys.stdin.readline()
    return code


def entry() -> NoReturn:
    """The program's entry point: run :func:`main`, then :func:`end_process` with its code."""
    end_process(main())


def _run_reporting_errors(argv: Sequence[str], prog: str) -> int:
    try:
        return run(argv, prog)
    except Exception as e:
        return report_error(
            e,
            program=prog,
            header=f"lockship installer {__version__}",
            known=(InstallError, PayloadError),
            log_dir=os.environ.get("LOCKSHIP_LOG_DIR"),
        )
