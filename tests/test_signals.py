"""Signals become :class:`Interrupted` at once, or after a deferred body; in-process."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest
from lockship.stub import signals
from lockship.stub.errors import Interrupted
from lockship.stub.signals import SignalGate


@pytest.fixture
def handlers() -> Iterator[None]:
    """The installer's handlers, the test runner's put back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    signals.install_handlers()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signals.GATE.reset()


def test_outside_deferred_a_signal_raises_at_once(handlers: None) -> None:
    with pytest.raises(Interrupted, match="interrupted by SIGTERM") as caught:
        signal.raise_signal(signal.SIGTERM)
    assert caught.value.exit_code == 128 + signal.SIGTERM


def test_inside_deferred_a_signal_is_raised_after_the_body(handlers: None) -> None:
    finished = False
    with pytest.raises(Interrupted, match="SIGINT") as caught, signals.deferred():
        signal.raise_signal(signal.SIGINT)
        finished = True
    assert finished
    assert caught.value.exit_code == 130


def test_once_raised_further_signals_never_interrupt_the_rollback(handlers: None) -> None:
    with pytest.raises(Interrupted):
        signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)  # dropped: the rollback runs undisturbed
    signals.install_handlers()  # a new run starts with a reset gate
    with pytest.raises(Interrupted):
        signal.raise_signal(signal.SIGINT)


def test_a_gate_holds_the_first_signal_only() -> None:
    gate = SignalGate()
    with pytest.raises(Interrupted, match="SIGTERM"), gate.deferred():
        gate.deliver(signal.SIGTERM)
        gate.deliver(signal.SIGINT)
    assert gate.raised


def test_nested_deferred_bodies_raise_when_the_outer_one_ends() -> None:
    gate = SignalGate()
    after_inner = False
    with pytest.raises(Interrupted), gate.deferred():
        with gate.deferred():
            gate.deliver(signal.SIGINT)
        after_inner = True
    assert after_inner


def test_a_failing_body_keeps_its_own_error_and_drops_later_signals() -> None:
    gate = SignalGate()
    with pytest.raises(ValueError), gate.deferred():
        gate.deliver(signal.SIGINT)
        raise ValueError("the body's own failure")
    gate.deliver(signal.SIGINT)  # the rollback of that failure is not interrupted
    gate.reset()
    assert gate.pending is None and not gate.raised
    with pytest.raises(Interrupted):
        gate.deliver(signal.SIGINT)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is POSIX")
def test_sighup_is_handled(handlers: None) -> None:
    with pytest.raises(Interrupted, match="SIGHUP"):
        signal.raise_signal(signal.SIGHUP)
