"""The installer's command line: the only place in the stub that prints, prompts or exits.

:func:`main` parses the arguments once and :func:`run` dispatches to one function per mode:
``--help``, ``--version``, ``--info``, ``--check``, ``--extract``, else installing. Errors
raised below are turned into one ``ERROR:`` line and an exit code by ``stub.boundary``.

Inputs besides the arguments: the header's variables (``stub.launch``), the Windows relaunch's
(``stub.windows``), and the hidden option ``--installer FILE``, which makes the program read the
payload of ``FILE`` instead of its own file (a stub run by hand on an installer, as the tests
do to reach the program's platform check on a machine the installer is not for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

from lockship.stub import __version__
from lockship.stub.check import verify_installer, verify_listed_sha256
from lockship.stub.errors import InstallError, PlatformMismatch, UsageError
from lockship.stub.interaction import (
    Interaction,
    decide_interaction,
    owns_console,
    stdin_is_terminal,
)
from lockship.stub.launch import Launch, read_launch, remove_unpacked_folder
from lockship.stub.prefix import normalize_prefix, recover_interrupted
from lockship.stub.shared.boundary import (
    end_process,
    report_error,
)
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import Payload, PayloadError, iter_entry, read_payload
from lockship.stub.shared.progress import (
    EVENTS_ENV,
    LineReporter,
    Reporter,
    TqdmReporter,
    with_events,
)
from lockship.stub.signals import install_handlers
from lockship.stub.summary import json_summary, text_summary
from lockship.stub.windows import (
    check_path_lengths,
    long_paths_enabled,
    relaunch_next_to_prefix,
    relaunched,
    restore_environment,
    temporary_base,
)

# --- arguments --------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _build_parser(prog: str, manifest: Manifest | None) -> argparse.ArgumentParser:
    """The parser; ``manifest`` (None if unknown) only fills in the help texts."""
    name = manifest.name if manifest else "NAME"
    what = f"{manifest.name} {manifest.version} ({manifest.platform})" if manifest else "an env"
    default_prefix = _default_prefix(manifest) if manifest else "~/NAME"
    parser = _ArgumentParser(
        prog=prog,
        description=f"Install {what}: a conda environment built by lockship {__version__}.",
        epilog="Exit codes: 0 done; 1 failed (a new prefix is removed, an existing one restored; "
        "a failing post-install script too; the error names a log file with the details); 2 "
        "usage error; 129, 130, 143 interrupted (rolled back as for 1).",
        add_help=False,  # --help is a mode like the others: it returns, it does not exit
    )
    add = parser.add_argument
    add("-h", "--help", action="store_true", help="show this help message and exit")
    add("-p", "--prefix", help=f"install into this folder (default: {default_prefix})")
    add(
        "-b",
        "--batch",
        action="store_true",
        help="never ask anything (unattended install); this accepts the license, if any",
    )
    add("-f", "--force", action="store_true", help="install even if PREFIX exists and is not empty")
    add(
        "-u",
        "--update",
        action="store_true",
        help="update PREFIX made by an earlier installer of the same name: changed packages are "
        "replaced, packages no longer locked are removed",
    )
    add("--info", action="store_true", help="print what this installer holds; install nothing")
    add("--json", action="store_true", help="with --info: print JSON")
    add(
        "--check",
        action="store_true",
        help="verify the whole installer (every package's sha256); install nothing",
    )
    add(
        "--extract",
        metavar="DIR",
        help="write the packages as a local channel plus environment.yml and pixi.lock into DIR "
        "(for micromamba, conda or pixi); install nothing",
    )
    add(
        "--no-post-install",
        action="store_true",
        help="do not run the post-install script the installer carries",
    )
    add(
        "--recover",
        action="store_true",
        help="only restore PREFIX where an install or update was interrupted (killed, power "
        "loss, a failed restore); every run against PREFIX does this first",
    )
    add("--version", action="store_true", help=f"print the version of {name} and of lockship")
    add("--installer", help=argparse.SUPPRESS)
    return parser


def parse_arguments(argv: Sequence[str], prog: str) -> argparse.Namespace:
    """The parsed ``argv``; raises UsageError. With ``--help`` other mistakes are ignored."""
    parser = _build_parser(prog, None)
    args, unknown = parser.parse_known_args(argv)
    if args.help:
        return args
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.json and not args.info:
        raise UsageError("--json only goes with --info (see --help)")
    return args


def _default_prefix(manifest: Manifest) -> str:
    chosen = manifest.options.default_prefix
    if chosen:  # expanded here, on the installing machine, not where it was built
        return os.path.expandvars(os.path.expanduser(chosen))
    if manifest.platform.startswith("win-"):
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        return str(Path(base) / manifest.name)
    return str(Path("~").expanduser() / manifest.name)


# --- the modes --------------------------------------------------------------------------

NO_LINK_SCRIPTS = (
    "Package post-link scripts will not run: this installer was built with --no-link-scripts"
)


def run(args: argparse.Namespace, launch: Launch) -> int:
    """Do what ``args`` ask; return the exit code. Raises InstallError or PayloadError."""
    installer = Path(args.installer) if args.installer else launch.installer
    if args.help:
        return show_help(launch.prog, installer)
    payload = read_payload(installer)
    manifest = Manifest.from_dict(payload.metadata)
    if args.version:
        return show_version(manifest)
    if args.info:
        return show_info(manifest, as_json=args.json)
    if args.check:
        return check_installer(payload, manifest)
    if args.extract:
        return extract(payload, manifest, args.extract)
    if args.recover:
        return recover(manifest, args)
    return install_interactively(payload, manifest, args, launch)


def recover(manifest: Manifest, args: argparse.Namespace) -> int:
    """``--recover``: restore an interrupted update of the prefix, and nothing else."""
    prefix = normalize_prefix(args.prefix or _default_prefix(manifest))
    if not _recover(prefix, _reporter()):
        print(f"Nothing to recover: no interrupted install or update in {prefix}")
    return 0


def _recover(prefix: Path, reporter: Reporter) -> bool:
    """Restore ``prefix`` if an update of it was killed outright; say so. True if it was."""
    journal = recover_interrupted(prefix)
    if journal is None:
        return False
    if journal.get("fresh"):
        reporter.message(f"An install into {prefix} was interrupted; removed what it had written")
        return True
    before = " ".join(str(journal[k]) for k in ("name", "version") if journal.get(k))
    reporter.message(
        f"An update of {prefix} was interrupted; restored the environment as it was before it"
        + (f" ({before})" if before else "")
    )
    return True


def show_help(prog: str, installer: Path) -> int:
    """The help, with this installer's name and default prefix if its file can be read."""
    try:
        manifest: Manifest | None = Manifest.from_dict(read_payload(installer).metadata)
    except (InstallError, PayloadError, OSError):
        manifest = None
    _build_parser(prog, manifest).print_help()
    return 0


def show_version(manifest: Manifest) -> int:
    print(
        f"{manifest.name} {manifest.version} (installer built by lockship "
        f"{manifest.lockship_version}; installer program {__version__})"
    )
    return 0


def show_info(manifest: Manifest, *, as_json: bool) -> int:
    print(json.dumps(json_summary(manifest), indent=2) if as_json else text_summary(manifest))
    return 0


def check_installer(payload: Payload, manifest: Manifest) -> int:
    """Verify every byte, then the whole file against a ``SHA256SUMS`` beside it, if any."""
    parts = verify_installer(payload, manifest)
    print(f"OK: {payload.path.name} is complete (every byte verified: {parts} parts)")
    actual = verify_listed_sha256(payload.path)
    if actual is not None:
        print(f"OK: its sha256 {actual} matches SHA256SUMS")
    return 0


def extract(payload: Payload, manifest: Manifest, folder: str) -> int:
    from lockship.stub.extract import extract_channel  # imported late: --help/--info start faster

    target = normalize_prefix(folder)
    extract_channel(payload, manifest, target, _reporter())
    print(f"Extracted {manifest.name} {manifest.version} into {target} (see README.txt there)")
    return 0


def install_interactively(
    payload: Payload, manifest: Manifest, args: argparse.Namespace, launch: Launch
) -> int:
    """Check machine and prefix, ask what must be asked, then install here or relaunched."""
    _check_machine(manifest)
    prefix = normalize_prefix(args.prefix or _default_prefix(manifest))
    windows = manifest.platform.startswith("win-")
    check_path_lengths(
        prefix, manifest.max_path_length, windows=windows, long_paths=long_paths_enabled()
    )
    interactive = _interaction(batch=args.batch).ask
    reporter = _reporter()
    _recover(prefix, reporter)
    # late: rattler is slow to import
    from lockship.stub.destination import PrefixDestination
    from lockship.stub.install import install
    from lockship.stub.preflight import InstallRequest, preflight
    from lockship.stub.source import PayloadSource

    request = InstallRequest(
        prefix=prefix,
        force=args.force,
        update=args.update or manifest.delta is not None,  # a delta installer only updates
        run_post_install=not args.no_post_install,
        unattended=not interactive,
        installer_name=launch.prog,
    )
    plan = preflight(manifest, request)
    if not args.batch and not _license_accepted(payload, manifest, interactive=interactive):
        return 1
    if interactive and not _install_confirmed(manifest, prefix):
        return 1
    if not manifest.options.link_scripts:
        reporter.message(NO_LINK_SCRIPTS)
    base = _temporary_base(prefix, windows=windows)
    if base is not None:
        return relaunch_next_to_prefix(base, launch.installer, launch.argv)
    verb = "Updating" if request.update and prefix.exists() else "Installing"
    reporter.message(f"{verb} {_what(manifest)} ({len(manifest.packages)} packages) into {prefix}")
    install(plan, PayloadSource(payload), PrefixDestination(prefix, plan.workers), reporter)
    activate = prefix / ("activate.bat" if windows else "activate.sh")
    how = str(activate) if windows else f"source {activate}"
    print(f"Installed {_what(manifest)} into {prefix} (activate: {how})")
    return 0


def _what(manifest: Manifest) -> str:
    return f"{manifest.name} {manifest.version}"


def _check_machine(manifest: Manifest) -> None:
    from rattler import Subdir

    machine = str(Subdir.current())
    if machine != manifest.platform:
        raise PlatformMismatch(manifest.platform, machine)


def _license_accepted(payload: Payload, manifest: Manifest, *, interactive: bool) -> bool:
    """Show the license, if any, and ask; True if there is none or it was accepted."""
    license_entry = manifest.options.license
    if not license_entry:
        return True
    if not interactive:
        raise InstallError(
            "this installer has a license that must be accepted; read it with --info and "
            "accept it by running with -b, or run the installer on a terminal"
        )
    text = b"".join(iter_entry(payload, payload.entry(str(license_entry))))
    print(text.decode("utf-8", "replace"))
    if _confirm("Do you accept the license terms? [yes/no] ", default=False):
        return True
    print("The license was not accepted; nothing installed.")
    return False


def _install_confirmed(manifest: Manifest, prefix: Path) -> bool:
    print(text_summary(manifest))
    print()
    if _confirm(f"Install {manifest.name} {manifest.version} into {prefix}? [Y/n] "):
        return True
    print("Nothing installed.")
    return False


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


def _temporary_base(prefix: Path, *, windows: bool) -> Path | None:
    frozen = bool(getattr(sys, "frozen", False))
    # the launcher runs FOLDER\stub\lockship-stub.exe, FOLDER being new in the base
    return temporary_base(
        prefix,
        windows=windows,
        frozen=frozen,
        relaunched=relaunched(),
        unpacked_in=Path(sys.executable).parents[2] if frozen else None,
    )


def _reporter() -> Reporter:
    shown = TqdmReporter(sys.stderr) if sys.stderr.isatty() else LineReporter(sys.stderr)
    return with_events(shown, os.environ.get(EVENTS_ENV))


def _interaction(*, batch: bool) -> Interaction:
    return decide_interaction(
        batch=batch,
        stdin_tty=stdin_is_terminal(),
        owns_console=owns_console() and not relaunched(),
    )


# --- the process ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the installer program on ``argv``; return its exit code (errors are reported)."""
    restore_environment()
    install_handlers()
    launch = read_launch(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        args = parse_arguments(launch.argv, launch.prog)
        code = run(args, launch)
    except Exception as e:
        code = report_error(
            e,
            program=launch.prog,
            header=f"lockship installer {__version__}",
            known=(InstallError, PayloadError),
            log_dir=launch.log_dir,
        )
    finally:
        remove_unpacked_folder(launch)
    if _interaction(batch=args is not None and args.batch).pause_at_exit:
        _pause(code)
    return code


def _pause(code: int) -> None:
    outcome = "finished" if code == 0 else f"FAILED (exit code {code})"
    print(f"\nThe installer {outcome}. Press Enter to close this window.")
    with suppress(OSError, KeyboardInterrupt):
        sys.stdin.readline()


def entry() -> NoReturn:
    """The program's entry point: run :func:`main`, then :func:`end_process` with its code."""
    end_process(main())
