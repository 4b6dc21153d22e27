"""Turn SIGINT/SIGTERM/SIGHUP into an :class:`Interrupted` error, at a safe moment.

While our own Python code runs (copying archives), a signal interrupts at once. While rattler
links (native code we cannot stop half-way), the signal is remembered and raised as soon as
rattler returns, so the rollback never races with files still being written.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lockship.stub.errors import Interrupted

_SIGNALS = [signal.SIGINT, signal.SIGTERM]
if sys.platform != "win32":
    _SIGNALS.append(signal.SIGHUP)


class _State:
    deferred = False
    pending: Interrupted | None = None
    raised = False


def _handler(signum: int, frame: FrameType | None) -> None:
    if _State.raised or _State.pending is not None:
        return  # already on the way out: never interrupt the rollback
    error = Interrupted(signal.Signals(signum).name, 128 + signum)
    if _State.deferred:
        _State.pending = error
        return
    _State.raised = True
    raise error


def install_handlers() -> None:
    """Install the handlers (also undoing an inherited 'ignore' from a background shell)."""
    for sig in _SIGNALS:
        signal.signal(sig, _handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold signals while the body runs; raise the first one afterwards."""
    _State.deferred = True
    try:
        yield
    finally:
        _State.deferred = False
    if _State.pending is not None:
        _State.raised = True
        raise _State.pending
