"""Running the external tools a freeze needs (PyInstaller, the C compiler): one line on failure."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lockship.builder.errors import StubError


def last_line(lines: Sequence[str]) -> str:
    return lines[-1]


def first_error(lines: Sequence[str]) -> str:
    """A compiler's first ``error:`` line (the later ones often follow from it)."""
    return next((line for line in lines if "error" in line), lines[-1])


def run_tool(
    command: Sequence[str],
    *,
    what: str,
    timeout: float,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pick: Callable[[Sequence[str]], str] = last_line,
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; StubError ``"{what} took longer than N s"`` if it hangs, or
    ``"{what} failed: LINE"`` with the line ``pick`` takes from its output if it fails."""
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise StubError(f"{what} took longer than {e.timeout:.0f} s") from e
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["?"]
        raise StubError(f"{what} failed: {pick(lines).strip()}")
    return done
