"""The memory of a whole process tree, sampled from ``/proc`` in a background thread.

Not ``ru_maxrss`` (wait4/getrusage): that is the largest *single* process, and on Linux it
inherits the parent's high-water mark through fork/vfork + exec. The parsers are pure functions
of a file's text, so they are tested without a process to read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


@dataclass(frozen=True)
class ProcessMemory:
    """What ``/proc/PID/status`` says of one process's memory (kB)."""

    name: str
    rss_kb: int
    anon_kb: int


def parse_status(text: str) -> ProcessMemory | None:
    """``/proc/PID/status``; None for a process without memory figures (a zombie, a thread)."""
    values: dict[str, int] = {}
    name = "?"
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Name":
            name = rest.strip()
        elif key in _STATUS_KEYS:
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values:
        return None
    return ProcessMemory(name, values["VmRSS"], values.get("RssAnon", 0))


def parse_pss(text: str) -> int | None:
    """The ``Pss:`` figure (kB) of ``/proc/PID/smaps_rollup``: each page a process shares
    counted by its share of it."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def parse_ppid(text: str) -> int:
    """The parent's pid from ``/proc/PID/stat`` (the command name may hold spaces and ``)``)."""
    return int(text.rsplit(")", 1)[1].split()[1])


def descendants(root: int, children: Mapping[int, list[int]]) -> list[int]:
    """``root`` and every process below it in ``children`` (pid -> child pids)."""
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


_HAS_CHILDREN_FILE = Path(f"/proc/self/task/{os.getpid()}/children").exists()


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants alive now (``/proc/PID/task/TID/children`` where the
    kernel has it, else every process's parent from ``/proc/PID/stat``)."""
    children: dict[int, list[int]] = {}
    if _HAS_CHILDREN_FILE:
        pending = [root]
        while pending:
            pid = pending.pop()
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                text = _read(f"/proc/{pid}/task/{task}/children") or ""
                found = [int(c) for c in text.split()]
                children.setdefault(pid, []).extend(found)
                pending.extend(found)
        return descendants(root, children)
    for entry in os.listdir("/proc"):
        stat = _read(f"/proc/{entry}/stat") if entry.isdigit() else None
        if stat is None:
            continue
        try:
            children.setdefault(parse_ppid(stat), []).append(int(entry))
        except (ValueError, IndexError):
            continue
    return descendants(root, children)


class TreeSampler:
    """Samples the summed RSS of a process tree in a background thread, and the summed PSS:
    a sum of RSS counts a page that forked workers share with their parent once per process,
    a sum of PSS once in all."""

    def __init__(self, root: int, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.samples = 0
        self.peak_rss_kb = 0
        self.peak_anon_kb = 0
        self.peak_pss_kb = 0
        self.peak_processes: list[tuple[str, int]] = []
        self.max_processes = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break
        self.cpu_s = time.thread_time() - cpu0

    def sample(self) -> None:
        rss = anon = pss = 0
        procs: list[tuple[str, int]] = []
        for pid in tree_pids(self.root):
            status = parse_status(_read(f"/proc/{pid}/status") or "")
            if status is None:
                continue
            rss += status.rss_kb
            anon += status.anon_kb
            pss += parse_pss(_read(f"/proc/{pid}/smaps_rollup") or "") or 0
            procs.append((status.name, status.rss_kb))
        self.samples += 1
        self.max_processes = max(self.max_processes, len(procs))
        if rss > self.peak_rss_kb:
            self.peak_rss_kb = rss
            self.peak_processes = procs
        self.peak_anon_kb = max(self.peak_anon_kb, anon)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
