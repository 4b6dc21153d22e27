"""Join a stub and a payload into one installer file, atomically.

Every stub is a stub pack (:mod:`lockship.builder.stubs.pack`): an unpacker, the one-folder
program as zstd frames, a trailer. Linux and macOS installers are
``[shell header][stub pack][payload]``: the header copies the pack's unpacker out of the file,
which unpacks the program, and runs it.
Windows installers are ``[stub pack][payload]``: the pack's unpacker is the ``.exe``'s own
program (``lockship-launch``), which finds the frames after its PE image. The program reads the
payload from the installer file, whose trailer it finds from the end (after a signature, if
any). That keeps start-up independent of the payload size and leaves a macOS program's bytes,
and with them its signatures, as they were frozen.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import jinja2
from lockship.builder.errors import BuildError, ChecksumMismatch
from lockship.builder.stubs.facts import FREEZE_COMMAND
from lockship.builder.stubs.pack import PROGRAM, PackLayout, read_layout
from lockship.stub.shared.boundary import CHUNK_SIZE, atomic_write, file_sha256
from lockship.stub.shared.manifest import Manifest, Region
from lockship.stub.shared.payload import Entry, plan_payload, range_sha256, signature_fields

UNAME_PATTERNS = {
    "linux-64": '"Linux x86_64"',
    "linux-aarch64": '"Linux aarch64"|"Linux arm64"',
    "linux-ppc64le": '"Linux ppc64le"',
    "osx-64": '"Darwin x86_64"|"Darwin arm64"',
    "osx-arm64": '"Darwin arm64"',
}
_FIELD_WIDTH = 14

#: how a Windows program begins (the DOS header of a PE file)
PE_MAGIC = b"MZ"


@dataclass(frozen=True)
class InstallerLayout:
    path: Path
    stub_offset: int
    stub_size: int
    payload_size: int
    sha256: str


def installer_file_name(name: str, version: str, platform: str) -> str:
    suffix = ".exe" if platform.startswith("win-") else ".sh"
    return f"{name}-{version}-{platform}{suffix}"


def shell_comment(value: str) -> str:
    """``value`` fit for the rest of a ``#`` comment line: no line ends, no control characters."""
    return "".join(c if c.isprintable() else "?" for c in value)


def shell_double_quoted(value: str) -> str:
    """``value`` fit for the inside of a double-quoted shell string: it stays text."""
    return "".join("\\" + c if c in '"$`\\' else c for c in shell_comment(value))


def render_header(
    manifest: Manifest,
    file_name: str,
    pack: PackLayout,
    glibc_min: str | None,
    total_size: int = 0,
) -> bytes:
    """The shell header, for the stub pack ``pack``; its length does not depend on the numbers
    filled into it."""
    if manifest.platform not in UNAME_PATTERNS:
        raise BuildError(f"lockship cannot build .sh installers for {manifest.platform}")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lockship.builder.output", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    # the values are checked at plan time (builder.identity); quoted here all the same, so
    # that no value, whatever made the manifest, becomes a line or a word of shell
    env.filters["comment"] = shell_comment
    env.filters["dq"] = shell_double_quoted
    template = env.get_template("header.sh.j2")

    def render(offset: int) -> bytes:
        return template.render(
            name=manifest.name,
            version=manifest.version,
            platform=manifest.platform,
            lockship_version=manifest.lockship_version,
            file_name=file_name,
            stub_offset=str(offset).ljust(_FIELD_WIDTH),
            stub_size=str(pack.size).ljust(_FIELD_WIDTH),
            unpacker_size=str(pack.unpacker_size).ljust(_FIELD_WIDTH),
            frames_size=str(pack.frames_size).ljust(_FIELD_WIDTH),
            total_size=str(total_size).ljust(_FIELD_WIDTH),
            glibc_min=glibc_min or "",
            uname_pattern=UNAME_PATTERNS[manifest.platform],
            program=PROGRAM,
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
    digests: Mapping[str, str] | None = None,
    stub_sha256: str | None = None,
) -> InstallerLayout:
    """Write the installer to a temporary name next to ``output``, then rename it into place
    (one installer; ``lockship build`` renames all of a build's installers together)."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(output, mode=0o755, durable=True) as out:
            return write_installer_to(
                out,
                output,
                stub_path,
                manifest,
                files,
                glibc_min=glibc_min,
                digests=digests,
                stub_sha256=stub_sha256,
            )
    except OSError as e:
        raise BuildError(f"cannot write the installer {output}: {e.strerror or e}") from e


def write_installer_to(
    out: IO[bytes],
    output: Path,
    stub_path: Path,
    manifest: Manifest,
    files: Iterable[tuple[str, Path]],
    *,
    glibc_min: str | None = None,
    digests: Mapping[str, str] | None = None,
    stub_sha256: str | None = None,
) -> InstallerLayout:
    """Write the installer that will be named ``output`` into ``out`` (a new, empty file).

    ``digests`` are the expected sha256 of entries whose hashes are already known (packages
    were verified when they entered the download cache), ``stub_sha256`` the stub's (from its
    sidecar). Everything is laid out first, so the header can state the final size, and then
    written in one pass that checks those hashes and hashes the whole installer on two helper
    threads. Files without a known hash are hashed before the pass.
    """
    known = dict(digests or {})
    try:
        stub_size = stub_path.stat().st_size
        is_windows = manifest.platform.startswith("win-")
        pack = read_layout(stub_path)
        _check_stub_kind(stub_path, windows=is_windows)
        entries = [
            _Range(path, 0, path.stat().st_size, known.get(name), name) for name, path in files
        ]
        entries = [e if e.sha256 else replace(e, sha256=_range_sha256(e)) for e in entries]
        header = b"" if is_windows else render_header(manifest, output.name, pack, glibc_min)
        stub_sha256 = stub_sha256 or file_sha256(stub_path)
        payload_offset = len(header) + stub_size
        program = _program_region(stub_path, len(header), stub_size, stub_sha256)
        listed = [(e.name, e.size, e.sha256 or "") for e in entries]

        def plan(header_sha256: str) -> tuple[list[Entry], bytes]:
            regions = [Region(_HEADER, 0, len(header), header_sha256)] if header else []
            described = replace(manifest, regions=(*regions, program))
            return plan_payload(payload_offset, listed, described.to_dict())

        # the header states the file's final size (so it can refuse a truncated copy) and the
        # index records the header's sha256: a sha256 has one length, so the sizes agree
        planned, tail = plan("0" * 64)
        total = payload_offset + sum(e.size for e in entries) + len(tail)
        if header:
            final = render_header(manifest, output.name, pack, glibc_min, total)
            if len(final) != len(header):
                raise BuildError("internal error: the installer header changed length")
            header = final
            planned, tail = plan(hashlib.sha256(header).hexdigest())
            if payload_offset + sum(e.size for e in entries) + len(tail) != total:
                raise BuildError("internal error: the installer index changed length")
        stub = _Range(stub_path, 0, stub_size, stub_sha256, "stub")
        actual, sha256 = _stream(out, header, [stub, *entries], tail)
    except OSError as e:
        raise BuildError(f"cannot write the installer {output}: {e.strerror or e}") from e
    if stub.sha256 and actual[0] != stub.sha256:
        raise _stub_mismatch(stub_path)
    for entry, source, digest in zip(planned, entries, actual[1:], strict=True):
        if digest != entry.sha256:
            raise BuildError(
                f"{source.path} does not have the sha256 it was checked with "
                f"({entry.sha256}; now {digest}): it was changed or damaged; "
                "delete it and build again"
            )
    _check_entries(manifest, {e.name: e.sha256 for e in planned})
    return InstallerLayout(output, len(header), stub_size, total - payload_offset, sha256)


@dataclass(frozen=True)
class _Range:
    """``size`` bytes of ``path`` from ``offset``, expected to hash to ``sha256`` if given."""

    path: Path
    offset: int
    size: int
    sha256: str | None
    name: str = ""


_HEADER = "the installer's header"
_PROGRAM = "the installer's program"


def _program_region(stub_path: Path, offset: int, size: int, sha256: str) -> Region:
    """The stub's bytes in the installer: after a shell header, or on Windows at the start of
    the file with the PE header's signature fields zeroed (signing changes them)."""
    if offset:  # after a shell header: the whole stub, whose sha256 is known
        return Region(_PROGRAM, offset, size, sha256)
    with open(stub_path, "rb") as f:
        zeroed = signature_fields(f.read(4096))
    return Region(_PROGRAM, 0, size, range_sha256(stub_path, 0, size, zeroed), zeroed)


def _stub_mismatch(stub_path: Path) -> BuildError:
    return BuildError(
        f"{stub_path} does not match the sha256 in its sidecar (it was changed after freezing); "
        f"freeze the stub again ({FREEZE_COMMAND})"
    )


def _read_range(source: _Range) -> Iterator[bytes]:
    with open(source.path, "rb") as f:
        f.seek(source.offset)
        remaining = source.size
        while remaining:
            chunk = f.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise BuildError(f"{source.path} changed while the installer was being written")
            remaining -= len(chunk)
            yield chunk


def _range_sha256(source: _Range) -> str:
    """The sha256 of a file, or of the part of it ``source`` names."""
    if source.offset == 0 and source.size == source.path.stat().st_size:
        return file_sha256(source.path)
    digest = hashlib.sha256()
    for chunk in _read_range(source):
        digest.update(chunk)
    return digest.hexdigest()


def _stream(
    out: IO[bytes], header: bytes, sources: list[_Range], tail: bytes
) -> tuple[list[str], str]:
    """Write header, sources and tail; return each source's sha256 and the whole file's.

    Two threads hash while this one reads and writes (sha256 releases the GIL), so the pass
    costs about as much as a plain copy on two cores. A third asks the kernel to write back
    what has been written so far every ``FLUSH_EVERY`` bytes, so the final fsync finds
    little left to do.
    """
    whole = hashlib.sha256()
    digests = [hashlib.sha256() for _ in sources]
    to_whole: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    to_parts: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    to_flush: queue.Queue[bool] = queue.Queue()

    def hash_whole() -> None:
        while (chunk := to_whole.get()) is not None:
            whole.update(chunk)

    def hash_parts() -> None:
        while (item := to_parts.get()) is not None:
            item[0].update(item[1])

    def flush() -> None:
        while to_flush.get():
            with contextlib.suppress(OSError):  # the final fsync reports a real failure
                os.fdatasync(out.fileno())

    threads = [
        threading.Thread(target=hash_whole, name="hash-installer", daemon=True),
        threading.Thread(target=hash_parts, name="hash-entries", daemon=True),
    ]
    if hasattr(os, "fdatasync"):
        threads.append(threading.Thread(target=flush, name="flush", daemon=True))
    for thread in threads:
        thread.start()
    unflushed = 0
    try:
        out.write(header)
        to_whole.put(header)
        for source, digest in zip(sources, digests, strict=True):
            for chunk in _read_range(source):
                to_parts.put((digest, chunk))
                to_whole.put(chunk)
                out.write(chunk)
                unflushed += len(chunk)
                if unflushed >= FLUSH_EVERY:
                    out.flush()
                    to_flush.put(True)
                    unflushed = 0
        out.write(tail)
        to_whole.put(tail)
    finally:
        to_whole.put(None)
        to_parts.put(None)
        to_flush.put(False)
        for thread in threads:
            thread.join()
    return [d.hexdigest() for d in digests], whole.hexdigest()


#: bytes written between two requests to write them back to disk
FLUSH_EVERY = 64 * 1024 * 1024
#: chunks queued for each hashing thread (memory stays under 2 x 16 x CHUNK_SIZE)
_QUEUE_CHUNKS = 16


def _check_stub_kind(stub_path: Path, *, windows: bool) -> None:
    """A Windows installer needs a Windows stub, and a ``.sh`` installer one of the others."""
    with open(stub_path, "rb") as f:
        is_pe = f.read(len(PE_MAGIC)) == PE_MAGIC
    if is_pe != windows:
        wanted = "Windows" if windows else "Linux or macOS"
        raise BuildError(
            f"{stub_path} is not a {wanted} stub; use the stub frozen for the installer's "
            f"platform ({FREEZE_COMMAND})"
        )


def _check_entries(manifest: Manifest, written: dict[str, str]) -> None:
    """The bytes that went into the payload must be the bytes the lock names."""
    for package in manifest.carried_packages:
        actual = written.get(package.entry)
        if actual != package.sha256:
            raise ChecksumMismatch(package.file_name, package.sha256, actual or "missing")
