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
