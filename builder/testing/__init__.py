"""Conda packages, channels and lock files made on the spot, for tests and the benchmark.

Both the test suite (``tests/factories.py``) and the benchmark (``scripts/benchmarks/``) write
real conda archives and lock them; this package is the one place both import, so neither
``tests`` nor ``scripts`` imports the other. It lives in the builder wing because that is where
conda archives and lock files are already read; the installer never imports it (``stub`` never
imports ``builder``), so it costs installers nothing.

- :mod:`.channels`: one archive from a dict of files, a channel index, a solve, a pixi.lock;
- :mod:`.synthetic`: whole environments of a given size and file count, shaped like real ones.
"""
