"""Timed runs: a command's wall time, its output lines and progress events with timestamps, and
the peak memory of its process tree; every run is stopped at its timeout."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from lockship.stub.shared.progress import EVENTS_ENV

from . import MB
from .sampling import TreeSampler


@dataclass(frozen=True)
class Event:
    """One progress event of the installer (``stub/shared/progress.py``'s ``EventReporter``)."""

    t: float  # seconds since the run started
    event: str  # "start", "finish" or "message"
    stage: str = ""
    text: str = ""


@dataclass
class Run:
    seconds: float
    returncode: int
    lines: list[tuple[float, str, str]]  # (seconds since start, "out"|"err", text)
    peak_rss_mb: float
    peak_anon_mb: float
    peak_pss_mb: float
    peak_processes: list[tuple[str, float]]
    sampler: dict[str, float] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    timed_out: float | None = None  # the timeout, when the run was stopped at it

    def first_line(self, stream: str = "err") -> tuple[float, str] | None:
        return next(((t, text) for t, s, text in self.lines if s == stream and text), None)

    def last_line(self, stream: str = "out") -> tuple[float, str] | None:
        return next(
            ((t, text) for t, s, text in reversed(self.lines) if s == stream and text), None
        )

    def tail(self, n: int = 15) -> str:
        return "\n".join(f"  {s}: {text}" for _, s, text in self.lines[-n:])

    def failure(self, what: str) -> str:
        """Why ``what`` failed, with the end of its output."""
        if self.timed_out is not None:
            return f"{what} timed out after {self.timed_out:.0f} s:\n{self.tail()}"
        return f"{what} failed ({self.returncode}):\n{self.tail()}"


def parse_events(text: str, started: float) -> list[Event]:
    """The JSON-lines progress events in ``text``, timed from ``started`` (epoch seconds).

    A line cut short (the process killed while writing it) is skipped."""
    events: list[Event] = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        events.append(
            Event(
                t=float(data["time"]) - started,
                event=str(data["event"]),
                stage=str(data.get("stage", "")),
                text=str(data.get("text", "")),
            )
        )
    return events


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group ``proc`` leads (started with a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def timed_run(
    command: Sequence[str],
    *,
    timeout: float,
    sample_interval: float | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    events: bool = False,
) -> Run:
    """Run ``command``, timestamp each output line, sample the tree's memory, collect its
    progress events (``events``); never raises. After ``timeout`` seconds the whole process
    group is killed and the run says so (``Run.timed_out``)."""
    events_file: IO[str] | None = None
    if events:
        # read once the run is over, then closed (and so removed) below
        events_file = tempfile.NamedTemporaryFile("r", suffix=".jsonl", encoding="utf-8")  # noqa: SIM115
        env = {**(env if env is not None else os.environ), EVENTS_ENV: events_file.name}
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,  # a timeout stops the whole tree
    )
    lines: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def reader(stream: IO[bytes], name: str) -> None:
        for raw in iter(stream.readline, b""):
            stamp = time.perf_counter() - t0
            with lock:
                lines.append((stamp, name, raw.decode(errors="replace").rstrip("\r\n")))
        stream.close()

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=reader, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=reader, args=(proc.stderr, "err"), daemon=True),
    ]
    for thread in readers:
        thread.start()
    sampler = TreeSampler(proc.pid, sample_interval).start() if sample_interval else None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        stop_group(proc)

    timer = threading.Timer(timeout, expire)
    timer.start()
    # waitpid rather than proc.wait: nothing else reaps the child before the sampler stops
    _, status = os.waitpid(proc.pid, 0)
    seconds = time.perf_counter() - t0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler is not None:
        sampler.stop()
    if expired.is_set():
        stop_group(proc)  # a child that outlived the leader holds the pipes open
    for thread in readers:
        thread.join()
    lines.sort(key=lambda item: item[0])
    collected: list[Event] = []
    if events_file is not None:
        collected = parse_events(events_file.read(), started)
        events_file.close()
    return Run(
        seconds=seconds,
        returncode=proc.returncode,
        lines=lines,
        peak_rss_mb=(sampler.peak_rss_kb * 1024 / MB) if sampler else math.nan,
        peak_anon_mb=(sampler.peak_anon_kb * 1024 / MB) if sampler else math.nan,
        peak_pss_mb=(sampler.peak_pss_kb * 1024 / MB) if sampler else math.nan,
        peak_processes=[(n, kb * 1024 / MB) for n, kb in sampler.peak_processes] if sampler else [],
        sampler={
            "samples": sampler.samples,
            "cpu_s": round(sampler.cpu_s, 3),
            "max_processes": sampler.max_processes,
        }
        if sampler
        else {},
        events=collected,
        timed_out=timeout if expired.is_set() else None,
    )


def first_stderr_line(
    command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
) -> tuple[float, str, str]:
    """Seconds from start to ``command``'s first stderr line, that line, and the rest of its
    stderr after it was stopped (SIGTERM to its process group) once the line arrived. A run
    that prints nothing within ``timeout`` is killed; its line is then empty."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert proc.stderr is not None
    timer = threading.Timer(timeout, stop_group, args=(proc,))
    timer.start()
    line = proc.stderr.readline().decode(errors="replace").rstrip()
    seconds = time.perf_counter() - t0
    timer.cancel()
    stop_group(proc, signal.SIGTERM)
    try:
        rest = proc.communicate(timeout=timeout)[1].decode(errors="replace")
    except subprocess.TimeoutExpired:
        stop_group(proc)
        rest = proc.communicate()[1].decode(errors="replace") + f"\n(killed after {timeout} s)"
    return seconds, line, rest
