"""The lockship payload format: the door between the builder and the installer.

An installer file is whatever the platform needs to start the installer program (a shell header
and the frozen stub on Linux and macOS, the frozen stub on Windows) followed by the payload. The
payload is self-describing and is always found from the *end* of the file, so the reader never
scans and never depends on what comes before it.

Byte layout, format version 1 (all integers unsigned little-endian)::

    offset                      size  content
    0                           P     anything: shell header, frozen stub, ... (the "preamble")
    P = payload_offset          ...   entries, stored as-is, back to back, no padding
    index_offset                L     the index: UTF-8 JSON (see below)
    index_offset + L            68    the trailer:
                                        u64  payload_offset
                                        u64  index_offset
                                        u64  index_length (L)
                                        32B  sha256 of the index bytes
                                        u32  format version (1)
                                        8B   magic b"LoCkShIp"
    end of file

The last 12 bytes (version and magic) are the same in every format version, so a reader can
always tell "not a lockship installer" from "a newer payload format than I understand" before
it interprets anything else. The index hash is checked before any offset in it is trusted.

The index is a JSON object::

    {"format": 1,
     "entries": [{"name": "linux-64/foo-1.0-h0_0.conda", "offset": <absolute>, "size": N,
                  "sha256": "<hex>"}, ...],
     "metadata": {...}}

Entry offsets are absolute file offsets and must lie inside ``[payload_offset, index_offset)``;
entry names are unique relative POSIX paths. ``metadata`` is opaque to this module (the
installer manifest lives in it, see ``stub.manifest``). Entries are hashed while they stream,
and a mismatch raises before the last chunk is handed out.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from lockship.stub.shared.boundary import CHUNK_SIZE

MAGIC = b"LoCkShIp"
FORMAT_VERSION = 1

_TAIL = struct.Struct("<I8s")  # version, magic: identical in every format version
_TRAILER_V1 = struct.Struct("<QQQ32sI8s")
TRAILER_SIZE = _TRAILER_V1.size  # 68
MAX_INDEX_SIZE = 256 * 1024 * 1024


class PayloadError(Exception):
    """The installer file is damaged, truncated, or not a lockship installer.

    The format's own root (the builder raises it too, while laying a payload out); both command
    lines report it like their own errors.
    """

    exit_code = 1


class UnsupportedFormat(PayloadError):
    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"payload format {version} is newer than this installer understands "
            f"({FORMAT_VERSION}); the file was built by a newer lockship and is damaged or mixed up"
        )


class EntryChecksumMismatch(PayloadError):
    def __init__(self, name: str, expected: str, actual: str) -> None:
        self.name, self.expected, self.actual = name, expected, actual
        super().__init__(
            f"{name} is corrupt inside the installer (sha256 {actual}, expected {expected}); "
            "download the installer again"
        )


@dataclass(frozen=True)
class Entry:
    """One stored file of the payload."""

    name: str
    offset: int
    size: int
    sha256: str


@dataclass(frozen=True)
class Payload:
    """A payload whose trailer and index have been read and checked."""

    path: Path
    payload_offset: int
    index_offset: int
    entries: tuple[Entry, ...]
    metadata: dict[str, Any]

    def entry(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise PayloadError(f"the installer has no entry named {name!r}")


def _check_entry_name(name: str) -> None:
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or name != str(pure):
        raise PayloadError(f"the installer index holds an unsafe entry name {name!r}")


def plan_payload(
    payload_offset: int, files: Iterable[tuple[str, int, str]], metadata: dict[str, Any]
) -> tuple[list[Entry], bytes]:
    """Lay out entries whose size and sha256 are known, back to back from ``payload_offset``.

    ``files`` are ``(entry name, size, sha256)``. Returns the entries and the bytes that follow
    them (index and trailer), so a writer can know the whole file's size before writing it;
    the bytes it then writes must be the ones described, which it has to check itself.
    """
    entries: list[Entry] = []
    seen: set[str] = set()
    offset = payload_offset
    for name, size, sha256 in files:
        _check_entry_name(name)
        if name in seen:
            raise PayloadError(f"two payload entries are named {name!r}")
        seen.add(name)
        entries.append(Entry(name, offset, size, sha256))
        offset += size
    return entries, payload_tail(payload_offset, offset, entries, metadata)


def payload_tail(
    payload_offset: int, index_offset: int, entries: Iterable[Entry], metadata: dict[str, Any]
) -> bytes:
    """The index and trailer that end a payload whose entries end at ``index_offset``."""
    index = encode_index(entries, metadata)
    trailer = _TRAILER_V1.pack(
        payload_offset,
        index_offset,
        len(index),
        hashlib.sha256(index).digest(),
        FORMAT_VERSION,
        MAGIC,
    )
    return index + trailer


def encode_index(entries: Iterable[Entry], metadata: dict[str, Any]) -> bytes:
    """The canonical index bytes: sorted keys, no whitespace, so builds are reproducible."""
    doc = {
        "format": FORMAT_VERSION,
        "entries": [
            {"name": e.name, "offset": e.offset, "size": e.size, "sha256": e.sha256}
            for e in entries
        ],
        "metadata": metadata,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_payload(path: Path) -> Payload:
    """Read and check the trailer and index of the installer at ``path``."""
    try:
        with open(path, "rb") as f:
            end = payload_end(f, os.fstat(f.fileno()).st_size)
            return _read(f, Path(path), end)
    except OSError as e:
        raise PayloadError(f"cannot read the installer {path}: {e.strerror or e}") from e


#: where a PE file's optional header keeps its data directories, by optional-header magic
_PE_DIRECTORIES = {0x10B: 96, 0x20B: 112}
_PE_SECURITY = 4  # the certificate table's index among the data directories


def _pe_optional_header(head: bytes) -> tuple[int, int] | None:
    """Where a PE file's optional header and its data directories begin (None: not a PE)."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None
    (pe,) = struct.unpack_from("<I", head, 0x3C)
    if pe + 24 + 2 > len(head) or head[pe : pe + 4] != b"PE\0\0":
        return None
    optional = pe + 24
    (magic,) = struct.unpack_from("<H", head, optional)
    directories = _PE_DIRECTORIES.get(magic)
    if directories is None:
        return None
    (count,) = struct.unpack_from("<I", head, optional + directories - 4)
    if count <= _PE_SECURITY or optional + directories + 8 * (_PE_SECURITY + 1) > len(head):
        return None
    return optional, optional + directories


def signature_fields(head: bytes) -> tuple[tuple[int, int], ...]:
    """The ``(offset, length)`` of the PE header fields Authenticode signing rewrites: the
    checksum and the certificate table's directory entry (nothing for other files)."""
    found = _pe_optional_header(head)
    if found is None:
        return ()
    optional, directories = found
    return ((optional + 64, 4), (directories + 8 * _PE_SECURITY, 8))


def payload_end(f: BinaryIO, file_size: int) -> int:
    """Where the payload's trailer ends: the end of the file, or, in a signed Windows ``.exe``,
    where its Authenticode certificate table begins.

    Signing appends that table after the file's data (8-byte aligned, zero-padded) and records
    its offset and size in the PE optional header's security directory; everything before it is
    covered by the signature, the trailer included.
    """
    f.seek(0)
    head = f.read(4096)
    found = _pe_optional_header(head)
    if found is None:
        return file_size
    table, size = (int(n) for n in struct.unpack_from("<II", head, found[1] + 8 * _PE_SECURITY))
    if not table or table + size != file_size or table < _TAIL.size:
        return file_size
    f.seek(table - 8)
    before = f.read(8)  # the padding to the table's 8-byte alignment is zeros
    return table - (len(before) - len(before.rstrip(b"\0")))


def range_sha256(path: Path, offset: int, size: int, zeroed: Iterable[tuple[int, int]] = ()) -> str:
    """The sha256 of ``size`` bytes of ``path`` at ``offset``, the ``zeroed`` ranges (file
    offsets) counted as zeros."""
    digest = hashlib.sha256()
    holes = sorted(zeroed)
    with open(path, "rb") as f:
        f.seek(offset)
        position, end = offset, offset + size
        while position < end:
            chunk = f.read(min(CHUNK_SIZE, end - position))
            if not chunk:
                raise PayloadError(f"{path} ends before byte {end:,}; download it again")
            data = bytearray(chunk)
            for start, length in holes:
                lo, hi = max(start, position), min(start + length, position + len(data))
                if lo < hi:
                    data[lo - position : hi - position] = bytes(hi - lo)
            digest.update(data)
            position += len(chunk)
    return digest.hexdigest()


def _read(f: BinaryIO, path: Path, file_size: int) -> Payload:
    truncated = PayloadError(
        f"{path} is not a complete lockship installer (it may be truncated); download it again"
    )
    if file_size < _TAIL.size:
        raise truncated
    f.seek(file_size - _TAIL.size)
    version, magic = _TAIL.unpack(f.read(_TAIL.size))
    if magic != MAGIC:
        raise truncated
    if version != FORMAT_VERSION:
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(version)
        raise PayloadError(f"payload format {version} is not a format this installer reads")
    if file_size < TRAILER_SIZE:
        raise truncated
    f.seek(file_size - TRAILER_SIZE)
    payload_offset, index_offset, index_length, index_hash, _, _ = _TRAILER_V1.unpack(
        f.read(TRAILER_SIZE)
    )
    if not (
        payload_offset <= index_offset
        and index_length <= MAX_INDEX_SIZE
        and index_offset + index_length == file_size - TRAILER_SIZE
    ):
        raise truncated
    f.seek(index_offset)
    raw = f.read(index_length)
    if len(raw) != index_length or hashlib.sha256(raw).digest() != index_hash:
        raise PayloadError(
            f"the index of {path} does not match its checksum (the file is damaged); "
            "download the installer again"
        )
    return Payload(
        path=path,
        payload_offset=payload_offset,
        index_offset=index_offset,
        entries=_parse_entries(raw, payload_offset, index_offset),
        metadata=_parse_metadata(raw),
    )


def _parse_entries(raw: bytes, payload_offset: int, index_offset: int) -> tuple[Entry, ...]:
    bad = PayloadError("the installer index is malformed; download the installer again")
    try:
        doc = json.loads(raw)
        items = doc["entries"]
        if doc.get("format") != FORMAT_VERSION or not isinstance(items, list):
            raise bad
        entries = tuple(
            Entry(str(i["name"]), int(i["offset"]), int(i["size"]), str(i["sha256"])) for i in items
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise bad from e
    names: set[str] = set()
    for entry in entries:
        _check_entry_name(entry.name)
        if entry.name in names:
            raise bad
        names.add(entry.name)
        if (
            entry.offset < payload_offset
            or entry.size < 0
            or entry.offset + entry.size > index_offset
        ):
            raise PayloadError(f"the installer index places {entry.name} outside the payload")
    return entries


def _parse_metadata(raw: bytes) -> dict[str, Any]:
    metadata = json.loads(raw).get("metadata")
    if not isinstance(metadata, dict):
        raise PayloadError("the installer index has no metadata; download the installer again")
    return metadata


def iter_entry(payload: Payload, entry: Entry, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Stream an entry's bytes, verifying its sha256.

    The final chunk is only yielded once the whole entry has been hashed, so a consumer that
    writes chunks to disk never completes a corrupt file without seeing the error.
    """
    digest = hashlib.sha256()
    remaining = entry.size
    pending: bytes | None = None
    with open(payload.path, "rb") as f:
        f.seek(entry.offset)
        while remaining:
            chunk = f.read(min(chunk_size, remaining))
            if not chunk:
                raise PayloadError(f"{payload.path} ends inside {entry.name}; download it again")
            remaining -= len(chunk)
            digest.update(chunk)
            if pending is not None:
                yield pending
            pending = chunk
    actual = digest.hexdigest()
    if actual != entry.sha256:
        raise EntryChecksumMismatch(entry.name, entry.sha256, actual)
    if pending is not None:
        yield pending


def copy_entry(payload: Payload, entry: Entry, target: Path) -> None:
    """Write an entry to ``target`` (a new file), verified; remove it again on any failure."""
    try:
        with open(target, "xb") as out:
            for chunk in iter_entry(payload, entry):
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def verify_payload(payload: Payload) -> None:
    """Hash every entry; raise on the first one that does not match the index."""
    for entry in payload.entries:
        for _ in iter_entry(payload, entry):
            pass
