"""Join a stub and a payload into one installer file, atomically.

Linux and macOS installers are ``[shell header][stub][payload]``: the header copies the stub (a
regular, unmodified PyInstaller one-file program) out of the file and runs it, so the stub's own
archive lookup never sees the payload. That keeps start-up independent of the payload size, is
immune to PyInstaller's magic bytes inside packages, and leaves a macOS stub's signature intact.

Windows installers are one ``.exe``: ``[bootloader][package entries][PyInstaller archive]
[index][trailer]``. The one-file bootloader finds its archive by searching backwards from the end
of the file for the archive's cookie and computes the archive's start from the cookie; so the
stub is split where its archive begins and the archive is stored as the *last* payload entry.
The bootloader then only searches through the index and trailer (a few KB, JSON that cannot
contain the cookie's control bytes), start-up does not depend on the payload size, and a package
that carries PyInstaller's magic bytes sits before the real archive where the search never goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import jinja2

from builder.errors import BuildError, ChecksumMismatch
from stub.manifest import Manifest
from stub.payload import write_payload

UNAME_PATTERNS = {
    "linux-64": '"Linux x86_64"',
    "linux-aarch64": '"Linux aarch64"|"Linux arm64"',
    "linux-ppc64le": '"Linux ppc64le"',
    "osx-64": '"Darwin x86_64"|"Darwin arm64"',
    "osx-arm64": '"Darwin arm64"',
}
_FIELD_WIDTH = 14

#: PyInstaller's one-file archive cookie (PyInstaller/archive/writers.py, CArchiveWriter)
COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE = struct.Struct("!8sIIII64s")
ARCHIVE_ENTRY = "lockship/pyinstaller-archive"


@dataclass(frozen=True)
class InstallerLayout:
    path: Path
    stub_offset: int
    stub_size: int
    payload_size: int


def installer_file_name(name: str, version: str, platform: str) -> str:
    suffix = ".exe" if platform.startswith("win-") else ".sh"
    return f"{name}-{version}-{platform}{suffix}"


def render_header(
    manifest: Manifest, file_name: str, stub_size: int, glibc_min: str | None, total_size: int = 0
) -> bytes:
    """The shell header; its length does not depend on the numbers filled into it."""
    if manifest.platform not in UNAME_PATTERNS:
        raise BuildError(f"lockship cannot build .sh installers for {manifest.platform}")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("builder", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("header.sh.j2")

    def render(offset: int) -> bytes:
        return template.render(
            name=manifest.name,
            version=manifest.version,
            platform=manifest.platform,
            lockship_version=manifest.lockship_version,
            file_name=file_name,
            stub_offset=str(offset).ljust(_FIELD_WIDTH),
            stub_size=str(stub_size).ljust(_FIELD_WIDTH),
            total_size=str(total_size).ljust(_FIELD_WIDTH),
            glibc_min=glibc_min or "",
            uname_pattern=UNAME_PATTERNS[manifest.platform],
        ).encode("utf-8")

    length = len(render(0))
    header = render(length)
    if len(header) != length:
        raise BuildError("internal error: the installer header changed length")
    return header


def write_installer(
    output: Path,
    stub_path: Path,
    manifest: Manifest,
    files: Iterable[tuple[str, Path]],
    *,
    glibc_min: str | None = None,
) -> InstallerLayout:
    """Write the installer to a temporary name next to ``output``, then rename it into place."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot write the installer {output}: {e.strerror or e}") from e
    partial = output.with_name(f".{output.name}.{os.getpid()}.part")
    stub_size = stub_path.stat().st_size
    is_windows = manifest.platform.startswith("win-")
    archive_start = onefile_archive_start(stub_path) if is_windows else stub_size
    files = list(files)
    try:
        with open(partial, "wb") as out:
            header = b""
            if not is_windows:
                header = render_header(manifest, output.name, stub_size, glibc_min)
                out.write(header)
            stub_offset = out.tell()
            with open(stub_path, "rb") as source:
                _copy_range(source, out, archive_start)
            payload_start = out.tell()
            if is_windows:
                archive = partial.with_name(partial.name + ".archive")
                with open(stub_path, "rb") as source, open(archive, "wb") as target:
                    source.seek(archive_start)
                    shutil.copyfileobj(source, target, 1024 * 1024)
                files.append((ARCHIVE_ENTRY, archive))
            entries = write_payload(out, files, manifest.to_dict())
            _check_entries(manifest, {e.name: e.sha256 for e in entries})
            payload_size = out.tell() - payload_start
            if header:
                # the header states the file's final size so it can refuse a truncated copy
                final = render_header(manifest, output.name, stub_size, glibc_min, out.tell())
                if len(final) != len(header):
                    raise BuildError("internal error: the installer header changed length")
                out.seek(0)
                out.write(final)
            out.flush()
            os.fsync(out.fileno())
        partial.chmod(0o755)
        os.replace(partial, output)
    except OSError as e:
        _discard(partial)
        raise BuildError(f"cannot write the installer {output}: {e.strerror or e}") from e
    except BaseException:
        _discard(partial)
        raise
    finally:
        if is_windows:
            _discard(partial.with_name(partial.name + ".archive"))
    return InstallerLayout(output, stub_offset, stub_size, payload_size)


def _discard(path: Path) -> None:
    """Remove a temporary file if it is there (a read-only folder refuses even that)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _copy_range(source: BinaryIO, target: BinaryIO, length: int) -> None:
    remaining = length
    while remaining:
        chunk = source.read(min(1024 * 1024, remaining))
        if not chunk:
            raise BuildError("the stub ended early while copying it")
        target.write(chunk)
        remaining -= len(chunk)


def onefile_archive_start(stub_path: Path) -> int:
    """Where the PyInstaller archive of a one-file program begins (from its last cookie)."""
    size = stub_path.stat().st_size
    with open(stub_path, "rb") as f:
        position = size
        tail = b""
        while position > 0:
            step = min(64 * 1024, position)
            position -= step
            f.seek(position)
            block = f.read(step) + tail
            found = block.rfind(COOKIE_MAGIC)
            if found != -1 and len(block) - found >= COOKIE.size:
                cookie_at = position + found
                f.seek(cookie_at)
                _, length, _, _, _, _ = COOKIE.unpack(f.read(COOKIE.size))
                start = cookie_at + COOKIE.size - int(length)
                if 0 <= start < cookie_at:
                    return start
                break
            tail = block[: COOKIE.size]
    raise BuildError(
        f"{stub_path} is not a PyInstaller one-file program (no archive cookie found); "
        "use a stub frozen with scripts/freeze_stub.py"
    )


def _check_entries(manifest: Manifest, written: dict[str, str]) -> None:
    """The bytes that went into the payload must be the bytes the lock names."""
    for package in manifest.packages:
        actual = written.get(package.entry)
        if actual != package.sha256:
            raise ChecksumMismatch(package.file_name, package.sha256, actual or "missing")
