"""What the reach preparations share: ``rootfs.py`` (Linux reach) and ``winereach.py`` (Windows
under Wine) both keep a cache of slow-to-make environments, time their steps, mark what is done
with stamps (written atomically), run commands with a timeout and a log, take a lock that the
tests take too, and freeze a stub from a copy of this checkout.

Imported by those scripts as a sibling module (each puts its own folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parents[1]

#: seconds after which a preparation command is stopped (a hung apt-get, Wine or QEMU)
RUN_TIMEOUT = 1800


class Failed(Exception):
    """A step failed; the message is one line (the step's log has the rest)."""


def default_cache(env_var: str, name: str) -> Path:
    """``$env_var``, else ``$XDG_CACHE_HOME/lockship/NAME`` (``~/.cache`` without it)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lockship" / name


def say(tag: str, line: str) -> None:
    print(f"[{tag}] {line}", file=sys.stderr, flush=True)


@dataclass
class CacheBase:
    """A cache folder whose preparation steps are announced (as ``[tag] ...``) and timed."""

    root: Path
    timings: list[tuple[str, float]] = field(default_factory=list)
    tag: ClassVar[str] = "reach"

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        say(self.tag, f"{what}...")
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.timings.append((what, took))
        say(self.tag, f"{what}: done in {took:.0f} s")


def run(
    argv: Sequence[str | Path],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> str:
    """Run a command with stdout and stderr on pipes (Windows programs under Wine need them),
    append both to ``log`` and return stdout; stop it after ``timeout`` seconds. Raises Failed
    with one line (and prints the end of the output)."""
    command = [str(a) for a in argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        process = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{' '.join(command[:4])} ... took more than {timeout:g} s") from e
    except OSError as e:
        raise Failed(f"cannot run {command[0]}: {e.strerror}") from e
    stdout = process.stdout.decode("utf-8", "replace")
    stderr = process.stderr.decode("utf-8", "replace")
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n{stdout}{stderr}")
    if process.returncode != 0:
        for line in (stdout + stderr).splitlines()[-25:]:
            print(f"    {line}", file=sys.stderr)
        raise Failed(f"{' '.join(command[:4])} ... exited {process.returncode} (log: {log})")
    return stdout


def has_stamp(folder: Path, name: str, content: str = "") -> bool:
    """Whether the stamp ``name`` in ``folder`` holds exactly ``content``."""
    try:
        return (folder / name).read_text() == content
    except OSError:
        return False


def set_stamp(folder: Path, name: str, content: str = "") -> None:
    """Write the stamp ``name`` in ``folder`` atomically: a step killed meanwhile leaves the
    previous stamp or none, never a partial one."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.part"
    partial.write_text(content)
    os.replace(partial, folder / name)


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One user of the cache at a time (a preparation, or the tests that use it)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_stub_version() -> str:
    """``stub.__version__``-digest of the stub sources: what a fresh freeze records as "stub"."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lockship.builder.stubs.facts import stub_identity

    return stub_identity()


def cross_compile_unpacker(compiler: str, output: Path, *, windows: bool = False) -> None:
    """The stub pack's unpacker (for ``windows`` its launcher) for another platform, compiled
    on the host with ``compiler``: zstd under QEMU takes minutes, and Wine has no compiler."""
    import tempfile

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lockship.builder.errors import StubError
    from lockship.builder.stubs.pack import compile_unpacker, zstd_source

    with tempfile.TemporaryDirectory(prefix="lockship-unpacker-") as tmp:
        try:
            compile_unpacker(zstd_source(Path(tmp) / "zstd"), output, compiler, windows=windows)
        except StubError as e:
            raise Failed(str(e)) from e


def copy_repo_files(names: Sequence[str], target: Path) -> None:
    """Copy these files and folders of the checkout into ``target`` (which must not hold them)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in names:
        source, destination = REPO / name, target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=ignore)
        else:
            shutil.copy2(source, destination)
