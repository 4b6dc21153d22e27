"""conda-ship, the peer ``scripts/bench.py --peer conda-ship`` measures lockship against.

Its wheel on PyPI carries two binaries, ``cs`` (the builder) and ``cs-template`` (the runtime it
stamps); its Python part needs conda, which pip cannot install, so only the binaries are used.
``scripts/dev-env.sh`` fetches them once (``python scripts/benchmarks/peer.py``) into
``.venv/peers/``.

How it is driven (conda-ship 0.11.1): a copy of the benchmark's pixi workspace gains a
``[tool.conda-ship]`` table (embedded bundle, the default environment), ``cs build`` writes one
executable, and running it with ``CONDA_SHIP_PREFIX`` installs the environment on first run and
then execs its delegate. The delegate named here is not in the environment, so the run ends
with conda-ship's "executable not found" after the install is complete; the install is checked
by counting the prefix's conda-meta records. conda-ship keeps its package cache in
``RATTLER_CACHE_DIR``: every timed run gets a fresh one (a cold cache, like lockship's).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

NAME = "conda-ship"
VERSION = "0.11.1"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_HOME = REPO / ".venv" / "peers" / f"{NAME}-{VERSION}"
#: a delegate that is not in the environment: the run installs, then stops (see above)
DELEGATE = "lockship-bench-no-delegate"

TABLE = """
[tool.conda-ship]
runtime-name = "{name}"
runtime-version = "1.0"
delegate-executable = "{delegate}"
artifact-layout = "embedded"
source-environment = "default"
"""


@dataclass(frozen=True)
class CondaShip:
    """The two binaries of one conda-ship release."""

    home: Path

    @property
    def cs(self) -> Path:
        return self.home / "cs"

    @property
    def template(self) -> Path:
        return self.home / "cs-template"

    def available(self) -> bool:
        return self.cs.is_file() and self.template.is_file()

    def workspace(self, source: Path, target: Path, name: str) -> Path:
        """A copy of the pixi workspace ``source`` that conda-ship can build."""
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy(source / "pixi.lock", target / "pixi.lock")
        toml = (source / "pixi.toml").read_text() + TABLE.format(name=name, delegate=DELEGATE)
        (target / "pixi.toml").write_text(toml)
        return target

    def build_command(self, workspace: Path, out: Path) -> list[str]:
        return [
            str(self.cs),
            "build",
            "--template",
            str(self.template),
            "--root",
            str(workspace),
            "--out-dir",
            str(out),
        ]


def fetch(home: Path = DEFAULT_HOME) -> CondaShip:
    """Download conda-ship's wheel with pip (no dependencies) and keep its two binaries."""
    peer = CondaShip(home)
    if peer.available():
        return peer
    wheels = home.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--disable-pip-version-check", f"{NAME}=={VERSION}", "-d", str(wheels)),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob(f"{NAME.replace('-', '_')}-{VERSION}-*.whl")
    home.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for binary in ("cs", "cs-template"):
            data = archive.read(f"{NAME.replace('-', '_')}-{VERSION}.data/scripts/{binary}")
            (home / binary).write_bytes(data)
            (home / binary).chmod(0o755)
    return peer


if __name__ == "__main__":
    try:
        found = fetch()
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        print(f"{NAME} {VERSION} not fetched ({e}); bench.py --peer will say so", file=sys.stderr)
        sys.exit(0)
    print(f"{NAME} {VERSION}: {found.home}", file=sys.stderr)
