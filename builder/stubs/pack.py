"""The installer stub: a packed program folder that unpacks itself in ~0.16 s (77 MB here).

An installer's program is a PyInstaller one-folder program (no one-file bootloader to unpack it
a second time), stored as a *stub pack*::

    [unpacker: U bytes][zstd frames: F bytes][trailer: 32 bytes]

On Linux and macOS the unpacker is ``lockship-unpack`` (``native/lockship-unpack.c`` and its
parts), a small native program that decodes the frames, one thread per CPU, into a ustar archive
and extracts it; the shell header copies it out of the installer, runs it, and then runs
:data:`PROGRAM` from the folder it made. On Windows it is ``lockship-launch``
(``native/windows/lockship-launch.c``), the ``.exe``'s own first program: it finds the frames
after its PE image, extracts them the same way, runs ``stub\\lockship-stub.exe`` and removes the
folder after it. Both are compiled with the zstd library python-zstandard ships. The frames hold
one archive of the folder, with every name under ``stub/``, in sorted order, owned by 0:0 and
dated 1980, split into :data:`FRAMES` frames at level :data:`LEVEL`: the same folder gives the
same bytes. The trailer is ``LSSTUBPK``, U, F and the format version as little-endian 64-bit
numbers. A macOS folder's bytes (and with them its signatures) come out as they went in.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import zstandard
from lockship.builder.errors import StubError
from lockship.builder.paths import default_cache_dir
from lockship.builder.stubs.facts import FREEZE_COMMAND
from lockship.builder.stubs.tools import first_error, run_tool

MAGIC = b"LSSTUBPK"
FORMAT = 1
_TRAILER = struct.Struct("<8sQQQ")
TRAILER_SIZE = _TRAILER.size
#: the program the header runs, relative to the folder the unpacker fills
PROGRAM = "stub/lockship-stub"
#: frames decode in parallel (one thread each), and the unpacker holds at most one more than
#: its threads at a time: eight (~10 MB each) cost 3 % in size against one
FRAMES = 8
#: 21 MB for the 75 MB linux-64 folder (level 12: 23.6 MB); decoding speed hardly depends on it
LEVEL = 19
#: the unpacker's C sources and the header they share (builder/stubs/native), compiled with zstd's
#: into one program
NATIVE = Path(__file__).parent / "native"
UNPACKER_SOURCES = tuple(sorted(NATIVE.glob("*.c")))
UNPACKER_FILES = tuple(sorted([*UNPACKER_SOURCES, *NATIVE.glob("*.h")]))
#: the Windows launcher's sources and their header, compiled with zstd's into one program
LAUNCHER_SOURCES = tuple(sorted((NATIVE / "windows").glob("*.c")))
LAUNCHER_FILES = tuple(sorted([*LAUNCHER_SOURCES, *(NATIVE / "windows").glob("*.h")]))
#: seconds a compile of the unpacker may take (zstd's amalgamated source: ~40 s here)
COMPILE_TIMEOUT = 20 * 60


@dataclass(frozen=True)
class PackLayout:
    """Where the parts of a stub pack lie, from its trailer."""

    unpacker_size: int
    frames_size: int

    @property
    def frames_offset(self) -> int:
        return self.unpacker_size

    @property
    def size(self) -> int:
        """The whole pack's size."""
        return self.unpacker_size + self.frames_size + TRAILER_SIZE


def read_layout(path: Path) -> PackLayout:
    """The layout of the stub pack at ``path``; StubError if it is not one."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(size - TRAILER_SIZE, 0))
            trailer = f.read(TRAILER_SIZE)
    except OSError as e:
        raise StubError(f"cannot read the stub {path}: {e.strerror}") from e
    if len(trailer) != TRAILER_SIZE or not trailer.startswith(MAGIC):
        raise StubError(
            f"{path} is not a lockship stub pack (no {MAGIC.decode()} trailer): Linux and macOS "
            f"installers need a stub frozen by this lockship version ({FREEZE_COMMAND})"
        )
    _, unpacker, frames, version = _TRAILER.unpack(trailer)
    if version != FORMAT or unpacker + frames + TRAILER_SIZE != size:
        raise StubError(
            f"{path} is a stub pack of another format or is damaged; freeze it again "
            f"({FREEZE_COMMAND})"
        )
    return PackLayout(unpacker, frames)


def write_pack(output: Path, unpacker: Path, program_dir: Path) -> None:
    """Pack ``program_dir`` (its files under ``stub/``) behind ``unpacker`` into ``output``."""
    frames = compress_frames(archive_bytes(program_dir))
    with open(output, "wb") as f:
        f.write(unpacker.read_bytes())
        f.write(frames)
        f.write(trailer(unpacker.stat().st_size, len(frames)))


def trailer(unpacker_size: int, frames_size: int) -> bytes:
    """The trailer that ends a stub pack of these parts."""
    return _TRAILER.pack(MAGIC, unpacker_size, frames_size, FORMAT)


def archive_bytes(program_dir: Path) -> bytes:
    """A ustar archive of ``program_dir`` named ``stub/...``: the same folder, the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path, name in _walk(program_dir):
            info = archive.gettarinfo(str(path), name)
            if not (info.isdir() or info.isfile() or info.issym()):
                raise StubError(f"{path} is neither a file, a folder nor a symbolic link")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 315532800, 0, 0, "", ""
            info.mode &= 0o755 if info.isdir() or info.mode & 0o111 else 0o644
            if info.isfile():
                with open(path, "rb") as f:
                    archive.addfile(info, f)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every path under ``root`` (``root`` first) with its archive name, sorted by name (so a
    folder comes before what it holds)."""
    yield root, "stub"
    names = {p.relative_to(root).as_posix(): p for p in root.rglob("*")}
    for name in sorted(names):
        yield names[name], f"stub/{name}"


def compress_frames(data: bytes, frames: int = FRAMES, level: int = LEVEL) -> bytes:
    """``data`` as ``frames`` zstd frames, each with its size and checksum, compressed in
    parallel (one single-threaded compressor per frame, so the bytes do not depend on the CPUs)."""
    step = max(-(-len(data) // frames), 1)
    chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]

    def one(chunk: bytes) -> bytes:
        compressor = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
        return compressor.compress(chunk)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return b"".join(pool.map(one, chunks))


def compile_unpacker(
    zstd_dir: Path, output: Path, compiler: str | None = None, *, windows: bool = False
) -> None:
    """Compile :data:`UNPACKER_SOURCES` (or for ``windows`` :data:`LAUNCHER_SOURCES`) with
    zstd's amalgamated ``zstd.c`` in ``zstd_dir``.

    The compiler (``$CC``, else ``cc``, or a mingw-w64 ``gcc`` for Windows) links it dynamically
    against the C library only: a machine that runs the stub has that. Unused code is dropped
    (zstd's compressor): for PE files that needs no unwind tables, which reference every function.
    """
    compiler = compiler or os.environ.get("CC") or ("gcc" if windows else "cc")
    if shutil.which(compiler) is None:
        raise StubError(
            f"no C compiler ({compiler}) to build the stub's unpacker: install one (gcc or "
            f"clang; on macOS `xcode-select --install`; for Windows mingw-w64) or set $CC"
        )
    sources = LAUNCHER_SOURCES if windows else UNPACKER_SOURCES
    flags = (
        ["-municode", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]
        if windows
        else ["-pthread"]
    )
    command = [
        compiler,
        "-O2",
        "-std=c99",
        *flags,
        "-ffunction-sections",
        "-fdata-sections",
        f"-I{zstd_dir}",
        f"-I{NATIVE}",
        *map(str, sources),
        str(zstd_dir / "zstd.c"),
        "-o",
        str(output),
        *_link_flags(compiler),
        # the same sources, the same bytes: a PE file records when it was linked unless told
        # not to, and mingw's assert() the (temporary) path of zstd.c
        *(["-Wl,--no-insert-timestamp", f"-ffile-prefix-map={zstd_dir}=zstd"] if windows else []),
    ]
    with tempfile.TemporaryDirectory(prefix="lockship-cc-") as tmp:
        run_tool(
            command,
            what=f"compiling the stub's unpacker with {compiler}",
            timeout=COMPILE_TIMEOUT,
            cwd=Path(tmp),
            pick=first_error,
        )


def _link_flags(compiler: str) -> list[str]:
    probe = subprocess.run(
        [compiler, "-dumpmachine"], capture_output=True, text=True, check=False
    ).stdout
    if "apple" in probe or "darwin" in probe:
        return ["-Wl,-dead_strip"]
    return ["-Wl,--gc-sections", "-s"]


#: where the C sources of zstd come from: the sdist of the python-zstandard that is installed
#: (its ``zstd/zstd.c`` is zstd's whole library in one file), downloaded once with pip
ZSTD_SDIST = "zstandard-{version}.tar.gz"


def zstd_source(target: Path) -> Path:
    """``target`` holding zstd's ``zstd.c`` and headers from the python-zstandard sdist.

    The sdist is kept in ``CACHE/sources``; the first freeze downloads it with pip (the
    machine's own index configuration), or it can be put there by hand.
    """
    cached = zstd_sdist()
    target.mkdir(parents=True, exist_ok=True)
    wanted = ("zstd.c", "zstd.h", "zstd_errors.h", "zdict.h")
    try:
        with tarfile.open(cached) as archive:
            for member in archive.getmembers():
                parts = member.name.split("/")
                if member.isfile() and parts[1:2] == ["zstd"] and parts[-1] in wanted:
                    source = archive.extractfile(member)
                    assert source is not None
                    (target / parts[-1]).write_bytes(source.read())
    except (OSError, tarfile.TarError) as e:
        raise StubError(
            f"{cached} is not a readable sdist ({e}); delete it and freeze again"
        ) from e
    if not (target / "zstd.c").is_file():
        raise StubError(f"{cached} holds no zstd/zstd.c; delete it and freeze again")
    return target


def zstd_sdist() -> Path:
    """The python-zstandard sdist in ``CACHE/sources``, downloaded with pip if it is not there."""
    release = version("zstandard")
    cached = default_cache_dir() / "sources" / ZSTD_SDIST.format(version=release)
    if not cached.is_file():
        _download_sdist(release, cached)
    return cached


def _download_sdist(release: str, cached: Path) -> None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sdist-", dir=cached.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--no-binary", ":all:", "--dest", tmp, f"zstandard=={release}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = Path(tmp) / cached.name
        if done.returncode != 0 or not found.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise StubError(
                f"cannot download zstd's sources (the {cached.name} sdist) to build the stub's "
                f"unpacker: {tail[0]}; put that file into {cached.parent}"
            )
        os.replace(found, cached)


def host_unpacker(
    cache_dir: Path | None = None, on_line: Callable[[str], None] = lambda _: None
) -> Path:
    """The stub's unpacker for this machine (on Windows its launcher), compiled once per source
    and compiler (cached in ``CACHE/unpackers``)."""
    windows = sys.platform == "win32"
    compiler = os.environ.get("CC") or ("gcc" if windows else "cc")
    cache_dir = cache_dir or default_cache_dir()
    sources = LAUNCHER_FILES if windows else UNPACKER_FILES
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in sources))
    digest.update(version("zstandard").encode())
    digest.update(_compiler_identity(compiler).encode())
    name = "lockship-launch.exe" if windows else "lockship-unpack"
    cached = cache_dir / "unpackers" / digest.hexdigest()[:16] / name
    if cached.is_file():
        return cached
    on_line("Compiling the stub's unpacker (zstd's decoder) with the C compiler (once)...")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpacker-", dir=cached.parent) as tmp:
        built = Path(tmp) / cached.name
        compile_unpacker(zstd_source(Path(tmp) / "zstd"), built, compiler, windows=windows)
        os.replace(built, cached)
    return cached


def _compiler_identity(compiler: str) -> str:
    try:
        done = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return compiler
    return f"{compiler}\n{done.stdout}"


def unpack(pack: Path, folder: Path, unpacker: Path | None = None) -> Path:
    """Unpack the stub pack ``pack`` into ``folder`` as the shell header does (with its own
    unpacker, or ``unpacker``); the program's path. For tests, tools and the benchmark."""
    layout = read_layout(pack)
    folder.mkdir(parents=True, exist_ok=True)
    if unpacker is None:
        unpacker = folder / "unpack"
        with open(pack, "rb") as source, open(unpacker, "wb") as target:
            target.write(source.read(layout.unpacker_size))
        unpacker.chmod(0o700)
    command = [str(unpacker), str(pack), str(layout.frames_offset), str(layout.frames_size)]
    done = subprocess.run([*command, str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StubError(f"unpacking {pack} failed: {done.stderr.strip()}")
    return folder / PROGRAM
