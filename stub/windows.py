"""What only a Windows installer does: the 260-character path check and the relaunch that moves
its temporary files from %TEMP% to a folder next to the prefix.

Each decision is a pure function of injected facts, so every platform's behaviour is tested on
any machine. The relaunch is a protocol between a parent and its child, spoken through private
environment variables whose names live here (but for the log's, see below):

==========================  ===================================================================
``_LOCKSHIP_RELAUNCHED``    ``1`` in the child: do not relaunch again
``_LOCKSHIP_LOG_DIR``       where the child writes an error's log (its own TEMP is removed;
                            the name is ``stub.launch``'s, which a ``.sh`` header sets too)
``_LOCKSHIP_LOCALAPPDATA``  the real %LOCALAPPDATA% (the child's names its unpacking folder)
==========================  ===================================================================

The ``.exe``'s launcher (``builder/stubs/native/windows/lockship-launch.c``) unpacks the
program into a new folder in %LOCALAPPDATA%, so a relaunched installer gets its new folder there
and :func:`restore_environment` puts the real value back before anything else reads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from lockship.stub.errors import PrefixError
from lockship.stub.launch import LOG_DIR_ENV

WINDOWS_MAX_PATH = 260

RELAUNCHED_ENV = "_LOCKSHIP_RELAUNCHED"
REAL_LOCALAPPDATA = "_LOCKSHIP_LOCALAPPDATA"


# --- path lengths -------------------------------------------------------------------------


def long_paths_enabled() -> bool:
    """Whether Windows allows paths longer than 260 characters (LongPathsEnabled)."""
    if sys.platform != "win32":
        return True
    import winreg

    try:
        with winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem"
        ) as key:
            value, _ = winreg.QueryValueEx(key, "LongPathsEnabled")
    except OSError:
        return False
    return bool(value)


def check_path_lengths(prefix: Path, deepest: int, *, windows: bool, long_paths: bool) -> None:
    """Refuse a Windows prefix whose deepest file would pass the 260-character limit."""
    if not windows or long_paths or deepest == 0:
        return
    longest = len(str(prefix)) + 1 + deepest
    if longest >= WINDOWS_MAX_PATH:
        raise PrefixError(
            f"the prefix {prefix} is too long: the deepest file of this environment would have "
            f"a {longest}-character path, over Windows' {WINDOWS_MAX_PATH}-character limit; "
            f"choose a prefix of at most {WINDOWS_MAX_PATH - 2 - deepest} characters, or enable "
            "long paths (LongPathsEnabled) and run the installer again"
        )


# --- the relaunch -------------------------------------------------------------------------


def temporary_base(
    prefix: Path,
    *,
    windows: bool,
    frozen: bool,
    relaunched: bool,
    unpacked_in: Path | None = None,
) -> Path | None:
    """Where a Windows installer should unpack itself instead of %TEMP%: next to the prefix.

    Returns None when no relaunch is needed: not Windows, not frozen, already relaunched, or
    already unpacked in that folder (``unpacked_in``: the folder holding the launcher's
    folder; the default prefix lies where the launcher first unpacks the program).
    """
    if not windows or not frozen or relaunched:
        return None
    parent = prefix.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if unpacked_in is not None and _same_folder(unpacked_in, parent):
        return None
    return parent


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.normcase(a.resolve()) == os.path.normcase(b.resolve())
    except OSError:
        return False


def relaunch_environment(
    folder: Path, log_dir: str, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment of an installer run again with its temporary files in ``folder``.

    TEMP and TMP cover Python's own temporary files; an error's log goes to ``log_dir``, which
    outlives ``folder``.
    """
    env = {
        **environ,
        "TEMP": str(folder),
        "TMP": str(folder),
        "LOCALAPPDATA": str(folder),
        RELAUNCHED_ENV: "1",
        LOG_DIR_ENV: log_dir,
    }
    real = environ.get(REAL_LOCALAPPDATA, environ.get("LOCALAPPDATA"))
    if real is not None:
        env[REAL_LOCALAPPDATA] = real
    return env


def restore_environment() -> None:
    """Undo what :func:`relaunch_environment` changed that the installer itself reads.

    The first thing the installer does, before anything reads %LOCALAPPDATA%.
    """
    real = os.environ.pop(REAL_LOCALAPPDATA, None)
    if real is not None:
        os.environ["LOCALAPPDATA"] = real


def relaunched() -> bool:
    """Whether this process is the child of a relaunch."""
    return os.environ.get(RELAUNCHED_ENV) == "1"


def relaunch_next_to_prefix(base: Path, installer: Path, argv: Sequence[str]) -> int:
    """Run ``installer`` again with its temporary files in a new folder in ``base``; its code.

    Antivirus scanning of %TEMP% is a known cause of slow or failed installs; the questions have
    been answered already, so the second run is unattended (-b). No timeout: the child is the
    install itself.
    """
    folder = Path(tempfile.mkdtemp(prefix=".lockship-tmp-", dir=base))
    # an error's log must outlive the folder removed below
    env = relaunch_environment(folder, log_dir=tempfile.gettempdir())
    try:
        return subprocess.run([str(installer), *argv, "-b"], env=env, check=False).returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)
