"""Facts about how the installer was started and where it runs, each decision a pure function
of injected facts (so every platform's behaviour is tested on any machine)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lockship.stub.errors import PrefixError

WINDOWS_MAX_PATH = 260


@dataclass(frozen=True)
class Interaction:
    #: questions may be asked (license, confirmation)
    ask: bool
    #: the installer has a console window of its own (double-clicked on Windows): show the
    #: outcome and wait for Enter before the window closes
    pause_at_exit: bool


def decide_interaction(*, batch: bool, stdin_tty: bool, owns_console: bool) -> Interaction:
    """Ask only on a terminal and without -b; pause only in a window nobody else watches."""
    return Interaction(ask=stdin_tty and not batch, pause_at_exit=owns_console and not batch)


def owns_console() -> bool:
    """True when this process's console window was created for it (a double-click).

    A console opened from cmd, PowerShell or a terminal also lists the shell; a one-file
    program double-clicked lists only its bootloader and itself.
    """
    if sys.platform != "win32":
        return False
    import ctypes

    processes = (ctypes.c_uint32 * 8)()
    count = ctypes.windll.kernel32.GetConsoleProcessList(processes, 8)
    ours = 2 if getattr(sys, "frozen", False) else 1
    return 0 < int(count) <= ours


def stdin_is_terminal() -> bool:
    """Whether questions can be asked: stdin is a terminal or a console.

    On Windows ``isatty()`` is also true for ``NUL`` (a character device), so ``installer.exe
    < NUL`` would ask and read end of input; there stdin must also be a console.
    """
    if not sys.stdin.isatty():
        return False
    if sys.platform != "win32":
        return True
    import ctypes
    import msvcrt

    mode = ctypes.c_uint32()
    handle = msvcrt.get_osfhandle(sys.stdin.fileno())
    return bool(ctypes.windll.kernel32.GetConsoleMode(handle, ctypes.byref(mode)))


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
    already unpacked in that folder (``unpacked_in``: the folder holding the one-file
    program's unpacked copy; the default prefix lies where the stub first unpacks itself).
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


#: the real %LOCALAPPDATA% of a relaunched installer, whose LOCALAPPDATA names the folder its
#: one-file bootloader unpacked into (see relaunch_environment)
REAL_LOCALAPPDATA = "LOCKSHIP_LOCALAPPDATA"


def relaunch_environment(folder: Path, log_dir: str) -> dict[str, str]:
    """The environment of an installer run again with its temporary files in ``folder``.

    The Windows stub's bootloader unpacks into %LOCALAPPDATA% (builder/stubs.py), so the child
    gets ``folder`` there and the real value aside; TEMP and TMP cover Python's own temporary
    files; an error's log goes to ``log_dir``, which outlives ``folder``.
    """
    env = {
        **os.environ,
        "TEMP": str(folder),
        "TMP": str(folder),
        "LOCALAPPDATA": str(folder),
        # without it the new bootloader takes itself for the second half of this one-file
        # program (they talk through _PYI_* variables) and reuses this process's unpacked copy
        "PYINSTALLER_RESET_ENVIRONMENT": "1",
        "LOCKSHIP_RELAUNCHED": "1",
        "LOCKSHIP_LOG_DIR": log_dir,
    }
    real = os.environ.get(REAL_LOCALAPPDATA, os.environ.get("LOCALAPPDATA"))
    if real is not None:
        env[REAL_LOCALAPPDATA] = real
    return env


def restore_environment() -> None:
    """Undo what relaunch_environment changed that the installer itself reads."""
    real = os.environ.pop(REAL_LOCALAPPDATA, None)
    if real is not None:
        os.environ["LOCALAPPDATA"] = real


def relaunched() -> bool:
    return os.environ.get("LOCKSHIP_RELAUNCHED") == "1"
