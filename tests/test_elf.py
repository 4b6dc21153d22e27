"""The glibc versions an ELF file needs, read from a hand-built file."""

from __future__ import annotations

import struct

import pytest
from lockship.builder.stubs.elf import (
    SHT_GNU_VERNEED,
    format_version,
    glibc_versions,
    parse_version,
)

SHT_STRTAB = 3


def build_elf(
    needs: dict[bytes, list[bytes]], *, big_endian: bool = False, bits: int = 64
) -> bytes:
    """An ELF file with only what the reader looks at: the file header, a string table and a
    ``SHT_GNU_VERNEED`` section with one ``Elf_Verneed`` per library and one ``Elf_Vernaux``
    per version it needs, chained by their ``next`` offsets."""
    order = ">" if big_endian else "<"
    strings = bytearray(b"\0")

    def string(text: bytes) -> int:
        strings.extend(text + b"\0")
        return len(strings) - len(text) - 1

    verneed = bytearray()
    libraries = list(needs.items())
    for index, (library, versions) in enumerate(libraries):
        file_name = string(library)
        after = 16 + 16 * len(versions)  # this Verneed and its Vernaux entries
        next_need = after if index < len(libraries) - 1 else 0
        verneed += struct.pack(order + "HHIII", 1, len(versions), file_name, 16, next_need)
        for number, version in enumerate(versions):
            next_aux = 16 if number < len(versions) - 1 else 0
            verneed += struct.pack(order + "IHHII", 0, 0, 2 + number, string(version), next_aux)

    header_size = 64 if bits == 64 else 52
    strtab_at = header_size
    verneed_at = strtab_at + len(strings)
    shoff = verneed_at + len(verneed)
    section = order + ("IIQQQQIIQQ" if bits == 64 else "IIIIIIIIII")
    sections = [
        struct.pack(section, *([0] * 10)),
        struct.pack(section, 0, SHT_STRTAB, 0, 0, strtab_at, len(strings), 0, 0, 1, 0),
        struct.pack(
            section, 0, SHT_GNU_VERNEED, 2, 0, verneed_at, len(verneed), 1, len(libraries), 4, 0
        ),
    ]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 2 if big_endian else 1, 1]) + b"\0" * 9
    if bits == 64:
        rest = struct.pack(order + "HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, 3, 1)
    else:
        rest = struct.pack(order + "HHIIIIIHHHHHH", 3, 3, 1, 0, 0, shoff, 0, 52, 32, 0, 40, 3, 1)
    header = ident + rest
    assert len(header) == header_size
    return header + bytes(strings) + bytes(verneed) + b"".join(sections)


def test_two_vernaux_entries_of_one_library() -> None:
    elf = build_elf({b"libc.so.6": [b"GLIBC_2.17", b"GLIBC_2.34"]})
    assert sorted(glibc_versions(elf)) == [(2, 17), (2, 34)]


@pytest.mark.parametrize(("big_endian", "bits"), [(False, 64), (True, 64), (False, 32)])
def test_every_library_and_layout(big_endian: bool, bits: int) -> None:
    elf = build_elf(
        {
            b"libc.so.6": [b"GLIBC_2.2.5", b"GLIBC_2.28"],
            b"libstdc++.so.6": [b"GLIBCXX_3.4", b"CXXABI_1.3"],
            b"libm.so.6": [b"GLIBC_2.29"],
        },
        big_endian=big_endian,
        bits=bits,
    )
    assert sorted(glibc_versions(elf)) == [(2, 2, 5), (2, 28), (2, 29)]
    assert format_version(max(glibc_versions(elf))) == "2.29"


def test_not_an_elf_file() -> None:
    assert list(glibc_versions(b"MZ\x90\x00 a Windows program")) == []


def test_versions_are_parsed_and_formatted() -> None:
    assert parse_version("2.28") == (2, 28)
    assert parse_version("2.x") is None
    assert format_version(None) is None
