"""Where an install's time goes: its phases, from the installer's progress events."""

from __future__ import annotations

from collections.abc import Sequence

from .runs import Event


def phase_breakdown(
    events: Sequence[Event], last_line: float | None, seconds: float
) -> dict[str, float]:
    """Seconds per installer phase.

    ``startup`` = start -> first event; ``<stage>`` = its ``start`` -> its ``finish`` event
    (summed when a stage runs more than once); ``between`` = time from the first event to the
    final stdout line (``last_line``, seconds since start) not covered by any stage;
    ``after_last_line`` = final stdout line -> process exit (``seconds``).
    """
    phases: dict[str, float] = {}
    if events:
        phases["startup"] = events[0].t
    starts: dict[str, float] = {}
    covered = 0.0
    for event in events:
        if event.event == "start":
            starts[event.stage] = event.t
        elif event.event == "finish" and event.stage in starts:
            span = event.t - starts.pop(event.stage)
            phases[event.stage] = phases.get(event.stage, 0.0) + span
            covered += span
    if last_line is not None and events:
        phases["between"] = max(0.0, last_line - events[0].t - covered)
        phases["after_last_line"] = seconds - last_line
    return {k: round(v, 3) for k, v in phases.items()}
