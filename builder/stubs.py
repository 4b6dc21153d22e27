"""Find or freeze the installer stub (the PyInstaller-frozen ``stub`` package) for a platform.

Frozen stubs are cached per lockship version and per content of the stub sources, so editing the
stub in a development checkout never reuses a stale binary. Next to each stub lies its sidecar
``<stub>.json`` (:class:`StubFacts`), written at freeze time: what the stub was frozen with, and
the newest glibc that any binary inside it needs, which the ``.sh`` header checks before running
the stub.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lockship import stub
from lockship.builder.errors import StubError
from rattler import Subdir

STUB_BASENAME = "lockship-stub"
FACTS_SUFFIX = ".json"

#: Modules the stub never imports that PyInstaller's analysis would follow anyway. networkx, an
#: optional import of ``rattler.repo_data``, drags in numpy and scipy (60 MB and most of two
#: minutes of freezing). asyncio and tqdm do without ssl (the stub is offline; rattler has its
#: own TLS). multiprocessing stays: the Linux stub unpacks archives in forked workers.
PYINSTALLER_EXCLUDES = (
    "networkx",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "IPython",
    "ipywidgets",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "certifi",
    "ssl",
    "tkinter",
    "unittest",
    "pydoc",
    "doctest",
    "xmlrpc",
    "lib2to3",
    "pdb",
    "sqlite3",
)
#: PyInstaller runtime hooks the stub has no use for, which would import ``inspect``, ``zipfile``
#: and ``pkgutil`` at every start (they patch source lookup and module listing for frozen apps).
SKIPPED_RUNTIME_HOOKS = ("pyi_rth_inspect", "pyi_rth_pkgutil")


@dataclass(frozen=True)
class StubFacts:
    """What a frozen stub needs and what it was made from: its sidecar ``<stub>.json``."""

    platform: str
    #: the newest GLIBC_x.y any bundled binary needs; None for a stub that is not a Linux ELF
    glibc: str | None
    python: str
    pyinstaller: str
    #: ``stub.__version__`` and the digest of the stub sources the stub was frozen from
    stub: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, data: object) -> StubFacts:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        kinds = {"platform": str, "python": str, "pyinstaller": str, "stub": str, "size": int}
        for name, kind in {**kinds, "sha256": str}.items():
            if not isinstance(data.get(name), kind):
                raise ValueError(f"{name!r} is missing or not a {kind.__name__}")
        glibc = data.get("glibc")
        if glibc is not None and not (isinstance(glibc, str) and _parse_version(glibc)):
            raise ValueError(f"'glibc' is not a version: {glibc!r}")
        return cls(
            platform=data["platform"],
            glibc=glibc,
            python=data["python"],
            pyinstaller=data["pyinstaller"],
            stub=data["stub"],
            size=data["size"],
            sha256=data["sha256"],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def host_platform() -> str:
    return str(Subdir.current())


def stub_file_name(platform: str) -> str:
    return f"{STUB_BASENAME}-{platform}" + (".exe" if platform.startswith("win-") else "")


def facts_path(stub_path: Path) -> Path:
    """Where the sidecar of ``stub_path`` lies: ``<stub>.json``."""
    return stub_path.with_name(stub_path.name + FACTS_SUFFIX)


def stub_source_digest() -> str:
    """A short hash of the stub package sources (and this module, which decides how to freeze)."""
    digest = hashlib.sha256()
    package_dir = Path(stub.__file__).parent
    for source in [*sorted(package_dir.glob("*.py")), Path(__file__)]:
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
    if cached.is_file() and _has_facts(cached):
        return cached
    if platform != host_platform():
        raise StubError(
            f"no installer stub for {platform}: lockship can only freeze one for this machine "
            f"({host_platform()}); pass --stub PATH with a stub frozen on {platform}"
        )
    on_freeze(f"Freezing the installer stub for {platform} with PyInstaller (once per version)...")
    freeze_stub(cached, on_line=on_freeze)
    return cached


def stub_facts(stub_path: Path, *, verify: bool = True) -> StubFacts | None:
    """The facts in the sidecar of ``stub_path``; None if it has none (a stub made elsewhere).

    Raises StubError if the sidecar is unreadable or describes another binary (its size, and
    with ``verify`` its sha256, differ from the stub's).
    """
    sidecar = facts_path(stub_path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StubError(f"cannot read {sidecar}: {e.strerror}") from e
    try:
        facts = StubFacts.from_json(json.loads(text))
    except ValueError as e:
        raise StubError(f"{sidecar} is not a valid stub sidecar: {e}") from e
    try:
        size = stub_path.stat().st_size
        sha256 = _sha256(stub_path)[0] if verify and size == facts.size else facts.sha256
    except OSError as e:
        raise StubError(f"cannot read the stub {stub_path}: {e.strerror}") from e
    if (size, sha256) != (facts.size, facts.sha256):
        raise StubError(
            f"{sidecar} describes another binary than {stub_path} (its size or sha256 differ); "
            "freeze the stub again (scripts/freeze_stub.py)"
        )
    return facts


def required_glibc(stub_path: Path) -> str | None:
    """The newest glibc the stub needs, from its sidecar; None without one or off Linux."""
    facts = stub_facts(stub_path)
    return facts.glibc if facts else None


def freeze_stub(
    output: Path, on_line: Callable[[str], None] = lambda _: None, *, compress: bool = False
) -> Path:
    """Freeze the ``stub`` package into a one-file executable at ``output``, with its sidecar.

    The one-file archive is stored uncompressed unless ``compress``: the stub unpacks it at every
    start, and inflating the 55 MB rattler extension doubled the start-up time (0.8 s instead of
    0.4 s) to save 48 MB. The sidecar and then the stub are each written to a temporary name and
    renamed into place, so a stub at ``output`` always has a sidecar, and a stale sidecar fails
    its sha256 check.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lockship-freeze-") as tmp:
        work = Path(tmp)
        command = [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level=WARN",
            f"--distpath={work / 'dist'}",
            f"--workpath={work / 'build'}",
            str(_write_spec(work, compress=compress)),
        ]
        # PyInstaller reads one zlib level for the archive and for the PYZ's modules, which are
        # read in place: stored, they need no inflating at import either (-15 ms, +3 MB)
        env = os.environ if compress else {**os.environ, "PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "0"}
        process = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, check=False
        )
        if process.returncode != 0:
            tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["?"]
            raise StubError(f"freezing the installer stub with PyInstaller failed: {tail[0]}")
        built = work / "dist" / (STUB_BASENAME + (".exe" if sys.platform == "win32" else ""))
        facts = _collect_facts(built)
        _write_atomically(facts_path(output), json.dumps(facts.to_json(), indent=2) + "\n")
        partial = output.with_name(f".{output.name}.{os.getpid()}.part")
        try:
            shutil.copyfile(built, partial)
            partial.chmod(0o755)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    needs = f", needs glibc >= {facts.glibc}" if facts.glibc else ""
    on_line(f"Froze the installer stub: {output} ({facts.size / 1e6:.0f} MB{needs})")
    return output


# --- freezing ---------------------------------------------------------------------------

_SPEC_TEMPLATE = """\
# Generated by lockship's builder/stubs.py for PyInstaller {pyinstaller}.
a = Analysis(
    [{entry!r}],
    pathex=[{pathex!r}],
    hiddenimports={hiddenimports!r},
    excludes={excludes!r},
    # not the building interpreter's -O: asserts and docstrings stay
    optimize=0,
)
a.scripts = [s for s in a.scripts if s[0] not in {skipped_hooks!r}]
pyz = PYZ(a.pure)
exe = EXE(
    pyz,
    a.scripts,
    a.binaries,
    a.datas,
    [],
    name={name!r},
    console=True,
    strip={strip!r},
    upx=False,
    # whether to zlib-compress the one-file archive's members, by kind
    cdict={cdict!r},
    runtime_tmpdir={runtime_tmpdir!r},
)
"""

#: Where the Windows stub's one-file bootloader unpacks itself, instead of %TEMP%: the folder
#: of the default prefix (%LOCALAPPDATA%\\NAME). Observed with PyInstaller 6.22.3's bootloader
#: (under Wine): it expands the variable, creates missing folders, ignores TEMP/TMP once this
#: is set, and never falls back. A relaunch next to another prefix sets LOCALAPPDATA for its
#: child (stub/cli.py), which puts back the real value before anything else reads it.
WINDOWS_UNPACK_DIR = "%LOCALAPPDATA%"

_ARCHIVE_KINDS = ("EXTENSION", "DATA", "BINARY", "EXECUTABLE", "PYSOURCE", "PYMODULE", "SPLASH")


def _write_spec(work: Path, *, compress: bool) -> Path:
    import PyInstaller

    entry = work / "lockship_stub_main.py"
    entry.write_text("from lockship.stub.cli import entry\n\nentry()\n")
    sources = _copy_stub_sources(work / "src")
    # every rattler subpackage (they are tiny; the extension is shared): a rattler whose
    # __init__ imported them lazily would hide them from PyInstaller's analysis
    hiddenimports = ["lockship.stub.cli", "tqdm", *_rattler_subpackages()]
    # the PYZ is read in place; its modules are compressed one by one (or not, see above)
    cdict = {kind: compress for kind in _ARCHIVE_KINDS} | {"PYZ": False, "SYMLINK": False}
    spec = work / f"{STUB_BASENAME}.spec"
    spec.write_text(
        _SPEC_TEMPLATE.format(
            pyinstaller=PyInstaller.__version__,
            entry=str(entry),
            pathex=str(sources),
            hiddenimports=hiddenimports,
            excludes=list(PYINSTALLER_EXCLUDES),
            skipped_hooks=list(SKIPPED_RUNTIME_HOOKS),
            name=STUB_BASENAME,
            strip=sys.platform != "win32",
            cdict=cdict,
            runtime_tmpdir=WINDOWS_UNPACK_DIR if sys.platform == "win32" else None,
        )
    )
    return spec


def _copy_stub_sources(root: Path) -> Path:
    """``root/lockship/stub``: the stub sources under their import name, and nothing else.

    In a checkout ``lockship.stub`` is the folder ``stub/`` mapped by the build backend;
    PyInstaller's analysis follows plain folders on its search path, so it gets a copy.
    """
    package = root / "lockship"
    (package / "stub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for source in sorted(Path(stub.__file__).parent.glob("*.py")):
        shutil.copyfile(source, package / "stub" / source.name)
    return root


def _rattler_subpackages() -> list[str]:
    import rattler

    root = Path(rattler.__file__).parent
    return sorted(f"rattler.{p.name}" for p in root.iterdir() if (p / "__init__.py").is_file())


def _collect_facts(built: Path) -> StubFacts:
    import PyInstaller

    sha256, size = _sha256(built)
    return StubFacts(
        platform=host_platform(),
        glibc=_format_version(max(_bundled_glibc_versions(built), default=None)),
        python=_platform.python_version(),
        pyinstaller=PyInstaller.__version__,
        stub=f"{stub.__version__}-{stub_source_digest()}",
        size=size,
        sha256=sha256,
    )


def _bundled_glibc_versions(executable: Path) -> Iterator[tuple[int, ...]]:
    """The GLIBC_x.y versions the bootloader and every file in its archive need."""
    data = executable.read_bytes()
    if not data.startswith(b"\x7fELF"):
        return
    yield from _glibc_versions(data)
    del data
    from PyInstaller.archive.readers import PKG_ITEM_PYZ, CArchiveReader

    archive = CArchiveReader(str(executable))
    for name, (*_, kind) in archive.toc.items():
        if kind != PKG_ITEM_PYZ:  # binaries, extensions, data (should a .so hide there)
            yield from _glibc_versions(archive.extract(name))


# --- ELF --------------------------------------------------------------------------------

_SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+(?:\.\d+)+)")


def _glibc_versions(elf: bytes) -> Iterator[tuple[int, ...]]:
    """The GLIBC_x.y symbol versions an ELF file needs, from its version-needs section.

    Nothing for other files. Reads section headers, which ``strip`` keeps.
    """
    if not elf.startswith(b"\x7fELF"):
        return
    order = "<" if elf[5] == 1 else ">"
    if elf[4] == 2:  # 64-bit
        (shoff,) = struct.unpack_from(order + "Q", elf, 0x28)
        shentsize, shnum = struct.unpack_from(order + "HH", elf, 0x3A)
        header = order + "IIQQQQII"
    else:
        (shoff,) = struct.unpack_from(order + "I", elf, 0x20)
        shentsize, shnum = struct.unpack_from(order + "HH", elf, 0x2E)
        header = order + "IIIIIIII"
    # name, type, flags, address, offset, size, link, info
    sections = [struct.unpack_from(header, elf, shoff + i * shentsize) for i in range(shnum)]
    for _, kind, _, _, offset, _, link, count in sections:
        if kind != _SHT_GNU_VERNEED:
            continue
        strings = sections[link][4]
        for _ in range(count):  # Elf_Verneed: version, aux count, file, aux offset, next
            _, aux_count, _, aux, next_need = struct.unpack_from(order + "HHIII", elf, offset)
            at = offset + aux
            for _ in range(aux_count):  # Elf_Vernaux: hash, flags, other, name, next
                _, _, _, name, next_aux = struct.unpack_from(order + "IHHII", elf, at)
                start = strings + name
                match = _GLIBC_VERSION.fullmatch(elf[start : elf.index(b"\0", start)])
                if match:
                    yield tuple(int(x) for x in match.group(1).split(b"."))
                at += next_aux
            offset += next_need


def _parse_version(text: str) -> tuple[int, ...] | None:
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        return None
    return tuple(int(x) for x in text.split("."))


def _format_version(version: tuple[int, ...] | None) -> str | None:
    return ".".join(str(x) for x in version) if version else None


# --- files ------------------------------------------------------------------------------


def _has_facts(stub_path: Path) -> bool:
    """Whether the stub has a sidecar of its size (the build checks its sha256 later)."""
    try:
        return stub_facts(stub_path, verify=False) is not None
    except StubError:
        return False


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
