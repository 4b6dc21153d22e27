"""The payload format: round trip, the pinned bytes, and every way a file can be damaged."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lockship.stub.shared.payload import (
    FORMAT_VERSION,
    MAGIC,
    TRAILER_SIZE,
    EntryChecksumMismatch,
    PayloadError,
    UnsupportedFormat,
    copy_entry,
    iter_entry,
    read_payload,
    verify_payload,
)

from tests.factories import write_payload


def make_installer(
    tmp_path: Path, files: dict[str, bytes], preamble: bytes = b"#!/bin/sh\nexit 1\n"
) -> Path:
    sources = []
    for i, (name, data) in enumerate(files.items()):
        source = tmp_path / f"src{i}"
        source.write_bytes(data)
        sources.append((name, source))
    installer = tmp_path / "installer.sh"
    with open(installer, "wb") as out:
        out.write(preamble)
        write_payload(out, sources, {"hello": "world"})
    return installer


def test_round_trip(tmp_path: Path) -> None:
    files = {"linux-64/a-1-0.conda": b"A" * 5000, "noarch/b-2-0.tar.bz2": b"", "c": b"xyz"}
    installer = make_installer(tmp_path, files, preamble=b"P" * 123)
    payload = read_payload(installer)
    assert payload.payload_offset == 123
    assert payload.metadata == {"hello": "world"}
    assert [e.name for e in payload.entries] == list(files)
    for entry in payload.entries:
        assert b"".join(iter_entry(payload, entry, chunk_size=1000)) == files[entry.name]
        assert entry.sha256 == hashlib.sha256(files[entry.name]).hexdigest()
    verify_payload(payload)
    copy_entry(payload, payload.entry("c"), tmp_path / "c.out")
    assert (tmp_path / "c.out").read_bytes() == b"xyz"


def test_golden_bytes(tmp_path: Path) -> None:
    """Pins the byte layout of format 1; changing it needs a new format version."""
    installer = make_installer(tmp_path, {"x/y": b"hi"}, preamble=b"PRE")
    data = installer.read_bytes()
    index = (
        b'{"entries":[{"name":"x/y","offset":3,"sha256":'
        b'"8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4","size":2}],'
        b'"format":1,"metadata":{"hello":"world"}}'
    )
    trailer = struct.pack(
        "<QQQ32sI8s", 3, 5, len(index), hashlib.sha256(index).digest(), 1, b"LoCkShIp"
    )
    assert data == b"PRE" + b"hi" + index + trailer
    assert len(trailer) == TRAILER_SIZE == 68


def test_newer_format_is_refused_by_name(tmp_path: Path) -> None:
    installer = make_installer(tmp_path, {"a": b"1"})
    data = bytearray(installer.read_bytes())
    data[-12:-8] = struct.pack("<I", FORMAT_VERSION + 2)
    installer.write_bytes(bytes(data))
    with pytest.raises(UnsupportedFormat) as info:
        read_payload(installer)
    assert str(info.value).startswith(
        f"payload format {FORMAT_VERSION + 2} is newer than this installer understands (1)"
    )


def test_not_an_installer(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"just some bytes" * 10)
    with pytest.raises(PayloadError, match="not a complete lockship installer"):
        read_payload(path)


def test_corrupted_index_is_detected_before_offsets_are_used(tmp_path: Path) -> None:
    installer = make_installer(tmp_path, {"a": b"1" * 100})
    data = bytearray(installer.read_bytes())
    index_at = len(data) - TRAILER_SIZE - 10
    data[index_at] ^= 0xFF
    installer.write_bytes(bytes(data))
    with pytest.raises(PayloadError, match=r"index of .* does not match its checksum"):
        read_payload(installer)


def test_flipped_entry_byte_fails_while_streaming(tmp_path: Path) -> None:
    installer = make_installer(tmp_path, {"a": b"1" * 5000}, preamble=b"")
    data = bytearray(installer.read_bytes())
    data[2500] ^= 0x01
    installer.write_bytes(bytes(data))
    payload = read_payload(installer)
    target = tmp_path / "out"
    with pytest.raises(EntryChecksumMismatch, match="a is corrupt inside the installer"):
        copy_entry(payload, payload.entries[0], target)
    assert not target.exists()


@pytest.mark.parametrize("cut", [1, 12, TRAILER_SIZE, TRAILER_SIZE + 5, 200])
def test_truncated(tmp_path: Path, cut: int) -> None:
    installer = make_installer(tmp_path, {"a": b"1" * 300})
    data = installer.read_bytes()
    installer.write_bytes(data[:-cut])
    with pytest.raises(PayloadError):
        read_payload(installer)


def test_unsafe_entry_names_are_rejected_on_write(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.write_bytes(b"x")
    for name in ("../x", "/abs", "a/../b", ""):
        with pytest.raises(PayloadError, match="unsafe entry name"):
            write_payload(io.BytesIO(), [(name, source)], {})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="cannot read the installer"):
        read_payload(tmp_path / "nope")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutations_only_raise_payload_errors(tmp_path: Path, data: st.DataObject) -> None:
    """Arbitrary truncation and byte changes never crash with anything but PayloadError."""
    base = tmp_path / "base.sh"
    if not base.exists():
        make_installer(tmp_path, {"linux-64/a.conda": b"A" * 700, "noarch/b": b"B" * 50})
        (tmp_path / "installer.sh").rename(base)
    original = base.read_bytes()
    mutated = bytearray(original[: data.draw(st.integers(0, len(original)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if mutated:
            at = data.draw(st.integers(0, len(mutated) - 1))
            mutated[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated += data.draw(st.binary(max_size=100))
    target = tmp_path / "mutated.sh"
    target.write_bytes(bytes(mutated))
    try:
        payload = read_payload(target)
        verify_payload(payload)
    except PayloadError:
        return
    # Whatever survived must describe entries inside the file.
    for entry in payload.entries:
        assert payload.payload_offset <= entry.offset <= entry.offset + entry.size
        assert entry.offset + entry.size <= len(mutated)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes(blob: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(blob + (MAGIC if len(blob) % 2 else b""))
        f.flush()
        with pytest.raises(PayloadError):
            read_payload(Path(f.name))


def _pe_preamble(size: int = 1024) -> bytearray:
    """The start of a PE32+ file: DOS header, PE signature, COFF header, optional header with
    16 data directories (all empty), padded to ``size``."""
    head = bytearray(size)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    optional = 0x80 + 24
    struct.pack_into("<H", head, optional, 0x20B)
    struct.pack_into("<I", head, optional + 108, 16)
    return head


def _sign(installer: Path, certificate: bytes) -> None:
    """Do to ``installer`` what Authenticode signing does to the file's layout: pad it to 8
    bytes, append the certificate table, and record it in the security directory."""
    data = bytearray(installer.read_bytes())
    data += b"\0" * (-len(data) % 8)
    table = len(data)
    data += certificate
    struct.pack_into("<II", data, 0x80 + 24 + 112 + 8 * 4, table, len(certificate))
    installer.write_bytes(bytes(data))


@pytest.mark.parametrize("preamble_size", [1024, 1027, 1029])  # each padding length
def test_a_signed_exe_keeps_its_payload_readable(tmp_path: Path, preamble_size: int) -> None:
    files = {"win-64/a-1-0.conda": b"A" * 3000, "lockship/LICENSE.txt": b"license"}
    installer = make_installer(tmp_path, files, preamble=bytes(_pe_preamble(preamble_size)))
    _sign(installer, b"\x30\x82certificate table" * 20)
    payload = read_payload(installer)
    assert [e.name for e in payload.entries] == list(files)
    verify_payload(payload)


def test_data_appended_without_a_signature_is_still_refused(tmp_path: Path) -> None:
    installer = make_installer(tmp_path, {"a": b"a"}, preamble=bytes(_pe_preamble()))
    with open(installer, "ab") as f:
        f.write(b"\0" * 8 + b"junk after the trailer")
    with pytest.raises(PayloadError, match="is not a complete lockship installer"):
        read_payload(installer)


def test_the_format_page_is_the_modules_docstring() -> None:
    """docs/payload-format.md says it holds stub/shared/payload.py's docstring: keep that true."""
    import lockship.stub.shared.payload as module

    page = (Path(__file__).parents[1] / "docs" / "payload-format.md").read_text(encoding="utf-8")
    block = page.split("```\n", 2)[1]
    assert module.__doc__ is not None
    assert block.strip() == module.__doc__.strip()
