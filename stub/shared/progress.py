"""The progress seam: the core reports through a :class:`Reporter` that the CLI supplies."""

from __future__ import annotations

from typing import IO, Any, Protocol


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


class TqdmReporter:
    """Progress bars on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._bar: Any = None

    def start(self, description: str, total: int, unit: str = "it") -> None:
        from lockship.stub.compat import without_tqdm_monitor
        from tqdm import tqdm

        without_tqdm_monitor()
        self._bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            unit_scale=unit == "B",
            file=self._stream,
            leave=True,
            dynamic_ncols=True,
        )

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self._stream)


class LineReporter:
    """Plain lines for logs and CI: one at the start of a stage, then every 25 %."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._description = ""
        self._total = 0
        self._done = 0
        self._next_quarter = 1

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def start(self, description: str, total: int, unit: str = "it") -> None:
        self._description, self._total, self._done = description, total, 0
        self._next_quarter = 1
        amount = f"{total / 1e6:.1f} MB" if unit == "B" else f"{total} {unit}"
        self._print(f"{description} ({amount})...")

    def advance(self, amount: int = 1) -> None:
        self._done += amount
        while (
            self._total
            and self._next_quarter < 4
            and self._done * 4 >= (self._total * self._next_quarter)
        ):
            self._print(f"{self._description}: {25 * self._next_quarter}%")
            self._next_quarter += 1

    def finish(self) -> None:
        self._print(f"{self._description}: done")

    def message(self, text: str) -> None:
        self._print(text)
