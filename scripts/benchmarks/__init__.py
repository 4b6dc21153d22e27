"""Benchmark lockship against the honest references: plain copies and rattler itself.

One run (a few minutes on a 2-core machine) generates synthetic but realistic conda channels
(:mod:`lockship.builder.testing.synthetic`, cached in ``--work``), builds installers from their
pixi.lock and measures, ``--repeat`` times each, reporting medians:

1. build time with a warm package cache vs. ``cat``-ing the same archives into one file;
2. installer size vs. the sum of the archive sizes plus the stub;
3. end-to-end install time (``bash installer.sh -b -p PREFIX``) vs. a bare ``rattler.install``
   of the same archives from a local folder (``file://`` URLs, fresh prefix and fresh cache on
   the same filesystem, in a subprocess: interpreter start and ``import rattler`` included);
4. time from start to the installer's first progress line (stderr), 1 MB vs. 1 GB payload;
5. peak resident memory of the installer's whole process tree (1 GB payload), by sampling
   ``/proc`` every ``--sample-interval`` seconds and summing the RSS of every descendant.
   The bare rattler runs are sampled the same way, as a reference.

It prints a table of absolute figures, ratios and targets, and writes everything (every sample,
every output line and progress event with its timestamp, the phase breakdown of each install)
as JSON. Every timed run is stopped after ``--timeout`` seconds (the benchmark then fails).

Environments (scaled by ``--scale``, except the 1 MB, 22 MB and 1 GB ones):

* ``main``: 40 packages, ~300 MB of archives, ~10,000 files: many small compressible text files
  (Zipf-distributed identifiers, ~3-4x with zstd), fewer large random (incompressible) binaries,
  ~3 % of text files with a text prefix placeholder, ~20 % of binaries with a NUL-terminated
  255-character binary placeholder, a few symlinks and dependencies between packages;
* ``1mb``: 4 small packages (startup reference);
* ``22mb``: 8 packages, 22 MB of archives (with ``--peer``: the file size against conda-ship's);
* ``1gb``: 4 big packages of mostly random data (startup, memory); ``--skip-1gb`` skips it.

Usage: python scripts/bench.py [--scale 0.1] [--repeat 3] [--skip-1gb] [--stub PATH]
                               [--work DIR] [--json PATH] [--timeout SECONDS]

Modules: :mod:`.environments` (what is generated), :mod:`.sampling` (the ``/proc`` sampler),
:mod:`.runs` (timed runs), :mod:`.phases` (an install's phases from its progress events),
:mod:`.measure` (the measurements), :mod:`.report` (targets, evaluation, the table),
:mod:`.peer` (conda-ship's binaries), ``__main__`` (the command line).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence

MB = 1_000_000  # every "MB" printed by the benchmark is 10^6 bytes, like the installer's own


def log(message: str) -> None:
    """A progress line for whoever runs the benchmark (stderr)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan
