"""Find or freeze the installer stub (the PyInstaller-frozen ``stub`` package) for a platform.

Frozen stubs are cached per lockship version and per content of the stub sources, so editing the
stub in a development checkout never reuses a stale binary.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rattler import Subdir

import stub
from builder.errors import StubError

STUB_BASENAME = "lockship-stub"
PYINSTALLER_EXCLUDES = ("tkinter", "unittest", "pydoc", "doctest", "xmlrpc", "lib2to3", "IPython")


def host_platform() -> str:
    return str(Subdir.current())


def stub_file_name(platform: str) -> str:
    return f"{STUB_BASENAME}-{platform}" + (".exe" if platform.startswith("win-") else "")


def stub_source_digest() -> str:
    """A short hash of the stub package sources (and this module, which decides how to freeze)."""
    digest = hashlib.sha256()
    package_dir = Path(stub.__file__).parent
    for source in sorted(package_dir.glob("*.py")) + [Path(__file__)]:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def default_cache_dir() -> Path:
    explicit = os.environ.get("LOCKSHIP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lockship"


def cached_stub_path(cache_dir: Path, platform: str) -> Path:
    version = f"{stub.__version__}-{stub_source_digest()}"
    return cache_dir / "stubs" / version / stub_file_name(platform)


def resolve_stub(
    platform: str,
    cache_dir: Path,
    *,
    explicit: Path | None = None,
    on_freeze: Callable[[str], None] = lambda _: None,
) -> Path:
    """The stub to use for ``platform``: the explicit one, a cached one, or a fresh freeze."""
    if explicit is not None:
        if not explicit.is_file():
            raise StubError(f"the stub {explicit} does not exist")
        return explicit
    cached = cached_stub_path(cache_dir, platform)
    if cached.is_file():
        return cached
    if platform != host_platform():
        raise StubError(
            f"no installer stub for {platform}: lockship can only freeze one for this machine "
            f"({host_platform()}); pass --stub PATH with a stub frozen on {platform}"
        )
    on_freeze(f"Freezing the installer stub for {platform} with PyInstaller (once per version)...")
    freeze_stub(cached, on_line=on_freeze)
    return cached


def freeze_stub(output: Path, on_line: Callable[[str], None] = lambda _: None) -> Path:
    """Freeze the ``stub`` package into a one-file executable at ``output`` (atomically)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    package_dir = Path(stub.__file__).parent
    with tempfile.TemporaryDirectory(prefix="lockship-freeze-") as tmp:
        work = Path(tmp)
        entry = work / "lockship_stub_main.py"
        entry.write_text("import sys\n\nfrom stub.cli import main\n\nsys.exit(main())\n")
        command = [
            sys.executable,
            "-m",
            "PyInstaller",
            "--onefile",
            "--noconfirm",
            "--log-level=WARN",
            f"--name={STUB_BASENAME}",
            f"--distpath={work / 'dist'}",
            f"--workpath={work / 'build'}",
            f"--specpath={work}",
            f"--paths={package_dir.parent}",
            "--collect-submodules=stub",
            "--collect-submodules=rattler",
            "--hidden-import=tqdm",
            *(f"--exclude-module={m}" for m in PYINSTALLER_EXCLUDES),
        ]
        if sys.platform != "win32":
            command.append("--strip")
        command.append(str(entry))
        process = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
        if process.returncode != 0:
            tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["?"]
            raise StubError(f"freezing the installer stub with PyInstaller failed: {tail[0]}")
        built = work / "dist" / (STUB_BASENAME + (".exe" if sys.platform == "win32" else ""))
        partial = output.with_name(f".{output.name}.{os.getpid()}.part")
        shutil.copyfile(built, partial)
        partial.chmod(0o755)
        os.replace(partial, output)
    on_line(f"Froze the installer stub: {output} ({output.stat().st_size / 1e6:.0f} MB)")
    return output


def required_glibc(stub_path: Path) -> str | None:
    """The newest GLIBC_x.y symbol version a Linux stub binary references (None elsewhere)."""
    with open(stub_path, "rb") as f:
        head = f.read(4)
        if head != b"\x7fELF":
            return None
        f.seek(0)
        data = f.read(4 * 1024 * 1024)
    versions = {
        tuple(int(x) for x in m.split(b".")) for m in re.findall(rb"GLIBC_(\d+\.\d+)", data)
    }
    if not versions:
        return None
    return ".".join(str(x) for x in max(versions))
