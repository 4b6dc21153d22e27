"""Benchmark lockship against plain copies, rattler itself and (``--peer``) conda-ship.

The benchmark is the package ``scripts/benchmarks/`` (its docstring says what it measures);
this file keeps the documented command working: ``python scripts/bench.py --help``.
"""

from __future__ import annotations

import sys

from benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
