"""Every failure the builder reports derives from :class:`BuildError`."""

from __future__ import annotations


class BuildError(Exception):
    """Root of all builder errors; ``str()`` is the one line the user sees."""

    exit_code = 1


class UsageError(BuildError):
    exit_code = 2


class LockfileError(BuildError):
    """The lockfile is missing, unreadable, or does not hold what was asked for."""


class FetchError(BuildError):
    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"downloading {url} failed: {reason}")


class ChecksumMismatch(BuildError):
    def __init__(self, package: str, expected: str, actual: str, algorithm: str = "sha256") -> None:
        self.package, self.expected, self.actual = package, expected, actual
        super().__init__(
            f"{package} does not match the lockfile: {algorithm} {actual}, expected {expected}; "
            "the channel serves a different file than the one that was locked"
        )


class StubError(BuildError):
    """No usable installer stub for a platform."""
