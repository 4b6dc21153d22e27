"""``.pyc`` compilation after linking (rattler compiles none), with the environment's own
interpreter, so the bytecode matches it."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lockship.stub.interpreter import find_python
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.progress import Reporter


def python_sources(prefix: Path) -> list[Path]:
    """The .py files of noarch python packages, as recorded in conda-meta."""
    sources: list[Path] = []
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        if data.get("noarch") != "python" and (data.get("noarch") or {}) != {"type": "python"}:
            continue
        sources.extend(prefix / f for f in data.get("files", []) if f.endswith(".py"))
    return [s for s in sources if s.is_file()]


def compile_pyc(
    prefix: Path, manifest: Manifest, reporter: Reporter, extra: Sequence[Path] = ()
) -> int:
    """Compile the noarch python sources (and ``extra``) with the environment's interpreter."""
    python = find_python(prefix, manifest)
    if python is None:
        return 0
    sources = python_sources(prefix) + [p for p in extra if p.is_file()]
    if not sources:
        return 0
    reporter.start("Compiling .pyc", len(sources), unit="file")
    with subprocess.Popen(
        [str(python), "-Wi", "-m", "compileall", "-l", "-i", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        # an interpreter that exits at once (e.g. it needs a newer glibc) closes the pipe early
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write("\n".join(str(s) for s in sources) + "\n")
            process.stdin.close()
        output = []
        for line in process.stdout:
            if line.startswith("Compiling "):
                reporter.advance(1)
            else:
                output.append(line.rstrip())
    code = process.returncode
    reporter.finish()
    if code != 0:
        reporter.message(
            "Some .py files did not compile (they still work): " + " ".join(output)[:500]
        )
    return len(sources)
