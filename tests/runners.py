"""Run lockship and its installers in subprocesses, as users do."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("ERROR:")]


def run_lockship(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: Path | None = None,
) -> Run:
    """Run the builder CLI in a subprocess, as a user would (in ``cwd``, else the repository)."""
    process = subprocess.run(
        [sys.executable, "-m", "lockship.builder.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO_ROOT,
    )
    return Run(process.returncode, process.stdout, process.stderr)


def run_installer(
    installer: Path,
    *args: str | Path,
    via: str = "bash",
    env: dict[str, str] | None = None,
    timeout: float = 300,
    input: str | None = None,
) -> Run:
    """Run an installer in a subprocess: ``bash file.sh`` or ``./file.sh`` (``via="exec"``)."""
    command = [str(installer)] if via == "exec" else [via, str(installer)]
    process = subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Run(process.returncode, process.stdout, process.stderr)


def start_until_asleep(
    installer: Path, prefix: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``bash installer -b ARGS -p PREFIX`` in its own process group; return once a
    post-link script has touched ``PREFIX/share/asleep`` (and sleeps, holding the install)."""
    process = subprocess.Popen(
        ["bash", str(installer), "-b", *args, "-p", str(prefix)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 120
    while not (prefix / "share" / "asleep").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the post-link script never started"
        time.sleep(0.05)
    return process


def run_on_terminal(installer: Path, *args: str | Path, answers: str) -> tuple[int, str]:
    """Run the installer with a pseudo-terminal as stdin/stdout, typing ``answers``."""
    import pty
    import select

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        ["bash", str(installer), *map(str, args)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    sent = False
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not sent and (b"[Y/n]" in output or b"[yes/no]" in output):
            os.write(leader, answers.encode())
            sent = True
    os.close(leader)
    return process.wait(timeout=60), output.decode("utf-8", "replace")


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py``, or the package ``scripts/NAME/``, as a module named
    ``lockship_NAME`` (the scripts folder is not a package; a package's modules then import
    as ``lockship_NAME.MODULE``)."""
    folder = REPO_ROOT / "scripts" / name
    if folder.is_dir():
        spec = importlib.util.spec_from_file_location(
            f"lockship_{name}", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
    else:
        spec = importlib.util.spec_from_file_location(f"lockship_{name}", folder.with_suffix(".py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
