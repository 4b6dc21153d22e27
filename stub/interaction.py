"""Whether the installer may ask questions and whether it should pause before its window
closes: facts about stdin and the console, and the pure decision made from them."""

from __future__ import annotations

import sys
from dataclasses import dataclass


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

    A console opened from cmd, PowerShell or a terminal also lists the shell; an installer
    double-clicked lists only its launcher and its program (this process).
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
