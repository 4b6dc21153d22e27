"""How the installer program was started, and the one folder it removes at exit.

A ``.sh`` installer's shell header (``builder/output/templates/header.sh.j2``) unpacks the
program into a new folder and runs it with four private variables:

==========================  ================================================================
``_LOCKSHIP_INSTALLER``     the installer file, whose payload the program reads
``_LOCKSHIP_PROG``          the installer's file name, for messages
``_LOCKSHIP_UNPACKED_DIR``  the folder the header made for the program
``_LOCKSHIP_LOG_DIR``       where an error's log goes: it must outlive that folder
==========================  ================================================================

The header also points ``TMPDIR`` at ``tmp`` in its folder, so that what the program and the
scripts it runs leave there (rattler's link scripts are files in ``TMPDIR`` while they run)
goes with the folder, also when the installer is killed outright and a later installer's
unpacker sweeps the folder away. A Windows relaunch passes ``_LOCKSHIP_LOG_DIR`` for the same
reason (``stub.windows``).

A Windows ``.exe``'s launcher (``builder/stubs/native/windows``) sets the first two and removes its
folder itself, after the program; a stub run directly has none of them and reads its own
file. The names are private so that no setting of the user's is taken for one: the builder's
``LOCKSHIP_STUB_DIR`` once doubled as the folder to remove, and an ``.exe`` deleted the user's
stubs. Even so, the folder is removed only if it looks like the header's (:func:`header_folder`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALLER_ENV = "_LOCKSHIP_INSTALLER"
PROG_ENV = "_LOCKSHIP_PROG"
UNPACKED_DIR_ENV = "_LOCKSHIP_UNPACKED_DIR"
LOG_DIR_ENV = "_LOCKSHIP_LOG_DIR"

#: what the header puts in its folder: the unpacker, the program's folder it fills, the lock
#: the program holds while it runs (builder/stubs/native/lockship-sweep.c) and the program's TMPDIR
HEADER_FILES = frozenset({"unpack", "stub", ".lock", "tmp"})
#: the program in the header's folder (lockship.builder.stubs.pack.PROGRAM)
PROGRAM = ("stub", "lockship-stub")


@dataclass(frozen=True)
class Launch:
    #: the arguments, without the program's name
    argv: tuple[str, ...]
    #: the installer file to read (``--installer`` overrides it)
    installer: Path
    #: the name the installer was started by
    prog: str
    #: the header's folder holding this program, removed at exit; None if there is none
    unpacked_dir: Path | None
    #: where an error's log goes; None: the temporary folder
    log_dir: str | None = None


def read_launch(
    argv: Sequence[str],
    environ: Mapping[str, str] = os.environ,
    *,
    argv0: str | None = None,
    executable: str | None = None,
    frozen: bool | None = None,
) -> Launch:
    """The launch facts from the header's variables; the rest defaults to this process's."""
    executable = sys.executable if executable is None else executable
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    return Launch(
        argv=tuple(argv),
        installer=Path(environ.get(INSTALLER_ENV) or executable),
        prog=environ.get(PROG_ENV) or Path(sys.argv[0] if argv0 is None else argv0).name,
        unpacked_dir=header_folder(
            environ.get(UNPACKED_DIR_ENV), executable=Path(executable), frozen=frozen
        ),
        log_dir=environ.get(LOG_DIR_ENV) or None,
    )


def header_folder(value: str | None, *, executable: Path, frozen: bool) -> Path | None:
    """The folder ``value`` names if the header made it for this program, else None.

    The header's folder is a ``lockship-XXXXXXXX`` holding only :data:`HEADER_FILES`, and a
    frozen program runs from the :data:`PROGRAM` in it (run from sources, that is a script).
    """
    if not value:
        return None
    folder = Path(value)
    try:
        names = {p.name for p in folder.iterdir()}
        if not folder.name.startswith("lockship-") or "stub" not in names:
            return None
        if names - HEADER_FILES:
            return None
        if frozen and not executable.samefile(folder.joinpath(*PROGRAM)):
            return None
    except OSError:
        return None
    return folder


def remove_unpacked_folder(launch: Launch) -> None:
    """Remove the header's folder, at exit (the program's libraries stay mapped)."""
    if launch.unpacked_dir is not None:
        shutil.rmtree(launch.unpacked_dir, ignore_errors=True)
