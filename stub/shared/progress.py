"""The progress seam: the core reports through a :class:`Reporter` that the CLI supplies."""

from __future__ import annotations

from pathlib import Path
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


#: Environment variable naming a file the installer appends its progress events to.
EVENTS_ENV = "LOCKSHIP_PROGRESS_EVENTS"


class EventReporter:
    """Another reporter, whose stages are also appended to a file as JSON lines for programs.

    One object a line, with ``time`` (seconds since the epoch) and ``event``: ``start``
    (``stage``, ``total``, ``unit``), ``finish`` (``stage``) or ``message`` (``text``). Programs
    that time the installer read these instead of the wording of its progress lines. The file
    is opened for each event (an install has tens of them), so nothing is left open.
    """

    def __init__(self, shown: Reporter, path: Path) -> None:
        self._shown = shown
        self._path = path
        self._stage = ""

    def _write(self, event: str, **fields: object) -> None:
        import json
        import time

        line = json.dumps({"time": time.time(), "event": event, **fields})
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def start(self, description: str, total: int, unit: str = "it") -> None:
        self._stage = description
        self._write("start", stage=description, total=total, unit=unit)
        self._shown.start(description, total, unit)

    def advance(self, amount: int = 1) -> None:
        self._shown.advance(amount)

    def finish(self) -> None:
        self._shown.finish()
        self._write("finish", stage=self._stage)

    def message(self, text: str) -> None:
        self._write("message", text=text)
        self._shown.message(text)


def with_events(shown: Reporter, path: str | None) -> Reporter:
    """``shown``, also appending its events to the file ``path`` when one is given."""
    if not path:
        return shown
    from lockship.stub.errors import InstallError

    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise InstallError(f"cannot write progress events to {path} ({EVENTS_ENV}): {e}") from e
    return EventReporter(shown, Path(path))
