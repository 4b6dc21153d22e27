"""Every failure the installer reports to its user derives from :class:`InstallError`."""

from __future__ import annotations


class InstallError(Exception):
    """Root of all installer errors; ``str()`` is the one line the user sees."""

    #: process exit code the CLI uses for this error
    exit_code = 1


class UsageError(InstallError):
    exit_code = 2


class PrefixError(InstallError):
    """The target prefix cannot be used as it is."""


class PlatformMismatch(InstallError):
    def __init__(self, built_for: str, machine: str) -> None:
        self.built_for, self.machine = built_for, machine
        super().__init__(
            f"this installer is for {built_for} but this machine is {machine}; "
            f"download the {machine} installer instead"
        )


class Interrupted(InstallError):
    def __init__(self, signal_name: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(f"interrupted by {signal_name}")


class LinkError(InstallError):
    """rattler failed to link the packages into the prefix."""


def one_line(error: Exception) -> str:
    """Shorten rattler's error chains ("X\nCaused by: Y") to their first and last lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]}: {lines[-1].removeprefix('Caused by:').strip()}"
