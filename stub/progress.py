"""The progress seam: the core reports through a :class:`Reporter` that the CLI supplies."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def start(self, description: str, total: int, unit: str = "it") -> None:
        """Begin a stage of ``total`` units (bytes when ``unit == "B"``)."""

    def advance(self, amount: int = 1) -> None: ...

    def finish(self) -> None:
        """End the current stage."""

    def message(self, text: str) -> None:
        """A line for the user, outside any progress bar."""


class SilentReporter:
    """A reporter that reports nothing (library use and tests)."""

    def start(self, description: str, total: int, unit: str = "it") -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass

    def message(self, text: str) -> None:
        pass
