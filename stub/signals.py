"""Turn SIGINT/SIGTERM/SIGHUP into an :class:`Interrupted` error, at a safe moment.

While our own Python code runs (copying archives), a signal interrupts at once. While rattler
links (native code we cannot stop half-way), the signal is remembered and raised as soon as
rattler returns, so the rollback never races with files still being written.

What a signal does depends on a :class:`SignalGate`; the process has one, :data:`GATE`, which
:func:`install_handlers` connects to the signals and resets.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

from lockship.stub.errors import Interrupted

SIGNALS = [signal.SIGINT, signal.SIGTERM]
if sys.platform != "win32":
    SIGNALS.append(signal.SIGHUP)


class SignalGate:
    """Where a delivered signal goes: raised now, held until the deferred body ends, or (once
    one was raised or is held) dropped, so nothing interrupts the rollback."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every signal: the state of a process that has received none."""
        self._depth = 0
        self.pending: Interrupted | None = None
        self.raised = False

    def deliver(self, signum: int) -> None:
        """What the handler does with signal ``signum``: raise, hold or drop it."""
        if self.raised or self.pending is not None:
            return  # already on the way out: never interrupt the rollback
        error = Interrupted(signal.Signals(signum).name, 128 + signum)
        if self._depth:
            self.pending = error
            return
        self.raised = True
        raise error

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals while the body runs; raise the first one afterwards."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self.pending is not None and not self._depth and not self.raised:
            self.raised = True
            raise self.pending


#: the process's gate, which the handlers deliver to
GATE = SignalGate()


def _handler(signum: int, frame: FrameType | None) -> None:
    GATE.deliver(signum)


def install_handlers() -> None:
    """Reset :data:`GATE` and install the handlers (also undoing an inherited 'ignore' from a
    background shell)."""
    GATE.reset()
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def deferred() -> AbstractContextManager[None]:
    """Hold signals while the body runs; raise the first one afterwards (see :data:`GATE`)."""
    return GATE.deferred()
