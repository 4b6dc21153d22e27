"""The glibc versions an ELF file needs, read from a hand-built file, and making optional the
ones only weak symbols need (the loader's side of it: tests/test_oldglibc.py)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from lockship.builder.stubs.elf import (
    SHT_DYNSYM,
    SHT_GNU_VERNEED,
    SHT_GNU_VERSYM,
    VER_NDX_GLOBAL,
    dynamic_symbols,
    format_version,
    glibc_versions,
    parse_version,
    relax_optional_glibc,
    version_needs,
)

SHT_STRTAB = 3
STB_GLOBAL, STB_WEAK = 1, 2


@dataclass(frozen=True)
class Symbol:
    name: bytes
    version: bytes  # the version it needs, b"" for none
    weak: bool = False
    defined: bool = False


def build_elf(
    needs: dict[bytes, list[bytes]],
    *,
    big_endian: bool = False,
    bits: int = 64,
    symbols: tuple[Symbol, ...] = (),
) -> bytes:
    """An ELF file with only what the reader looks at: the file header, a string table, a
    ``SHT_GNU_VERNEED`` section with one ``Elf_Verneed`` per library and one ``Elf_Vernaux``
    per version it needs, chained by their ``next`` offsets, and with ``symbols`` a dynamic
    symbol table and its ``SHT_GNU_VERSYM`` indexes (versions numbered from 2, in order)."""
    order = ">" if big_endian else "<"
    strings = bytearray(b"\0")

    def string(text: bytes) -> int:
        strings.extend(text + b"\0")
        return len(strings) - len(text) - 1

    verneed = bytearray()
    libraries = list(needs.items())
    indexes: dict[bytes, int] = {}
    for index, (library, versions) in enumerate(libraries):
        file_name = string(library)
        after = 16 + 16 * len(versions)  # this Verneed and its Vernaux entries
        next_need = after if index < len(libraries) - 1 else 0
        verneed += struct.pack(order + "HHIII", 1, len(versions), file_name, 16, next_need)
        for number, version in enumerate(versions):
            next_aux = 16 if number < len(versions) - 1 else 0
            indexes[version] = 2 + len(indexes)
            verneed += struct.pack(
                order + "IHHII", 0, 0, indexes[version], string(version), next_aux
            )
    dynsym = bytearray(b"\0" * (24 if bits == 64 else 16))  # symbol 0: none
    versym = bytearray(struct.pack(order + "H", 0))
    for symbol in symbols:
        info = (STB_WEAK if symbol.weak else STB_GLOBAL) << 4 | 2  # a function
        shndx = 7 if symbol.defined else 0
        name = string(symbol.name)
        if bits == 64:
            dynsym += struct.pack(order + "IBBHQQ", name, info, 0, shndx, 0, 0)
        else:
            dynsym += struct.pack(order + "IIIBBH", name, 0, 0, info, 0, shndx)
        versym += struct.pack(order + "H", indexes.get(symbol.version, VER_NDX_GLOBAL))

    if not symbols:
        dynsym, versym = bytearray(), bytearray()
    header_size = 64 if bits == 64 else 52
    strtab_at = header_size
    verneed_at = strtab_at + len(strings)
    dynsym_at = verneed_at + len(verneed)
    versym_at = dynsym_at + len(dynsym)
    shoff = versym_at + len(versym)
    section = order + ("IIQQQQIIQQ" if bits == 64 else "IIIIIIIIII")
    sections = [
        struct.pack(section, *([0] * 10)),
        struct.pack(section, 0, SHT_STRTAB, 0, 0, strtab_at, len(strings), 0, 0, 1, 0),
        struct.pack(
            section, 0, SHT_GNU_VERNEED, 2, 0, verneed_at, len(verneed), 1, len(libraries), 4, 0
        ),
    ]
    if symbols:
        sections += [
            struct.pack(section, 0, SHT_DYNSYM, 2, 0, dynsym_at, len(dynsym), 1, 1, 8, 0),
            struct.pack(section, 0, SHT_GNU_VERSYM, 2, 0, versym_at, len(versym), 3, 0, 2, 0),
        ]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 2 if big_endian else 1, 1]) + b"\0" * 9
    if bits == 64:
        rest = struct.pack(
            order + "HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, len(sections), 1
        )
    else:
        rest = struct.pack(
            order + "HHIIIIIHHHHHH", 3, 3, 1, 0, 0, shoff, 0, 52, 32, 0, 40, len(sections), 1
        )
    header = ident + rest
    assert len(header) == header_size
    body = bytes(strings) + bytes(verneed) + bytes(dynsym) + bytes(versym)
    return header + body + b"".join(sections)


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


# --- making optional what only weak symbols need --------------------------------------------

#: py-rattler's aarch64 wheel, in small: four weak functions of newer glibc, the rest 2.17
RATTLER_LIKE = (
    Symbol(b"statx", b"GLIBC_2.28", weak=True),
    Symbol(b"getrandom", b"GLIBC_2.25", weak=True),
    Symbol(b"malloc", b"GLIBC_2.17"),
    Symbol(b"PyInit_rattler", b"", defined=True),
)


@pytest.mark.parametrize(("big_endian", "bits"), [(False, 64), (True, 64), (False, 32)])
def test_versions_only_weak_symbols_need_are_made_optional(big_endian: bool, bits: int) -> None:
    needs = {b"libc.so.6": [b"GLIBC_2.17", b"GLIBC_2.25", b"GLIBC_2.28"]}
    elf = build_elf(needs, big_endian=big_endian, bits=bits, symbols=RATTLER_LIKE)
    assert max(glibc_versions(elf)) == (2, 28)
    relaxed, symbols = relax_optional_glibc(elf, (2, 17))
    assert sorted(symbols) == ["getrandom@GLIBC_2.25", "statx@GLIBC_2.28"]
    assert list(glibc_versions(relaxed)) == [(2, 17)]
    assert len(relaxed) == len(elf)
    # out of libc's chain: what the loader checks and what auditwheel reads
    assert [(n.library, n.name, n.weak) for n in version_needs(relaxed)] == [
        ("libc.so.6", "GLIBC_2.17", False)
    ]
    bound = {s.name: s.version for s in dynamic_symbols(relaxed)}
    # the weak ones are bound by name now; the others keep their versions
    assert bound["statx"] == bound["getrandom"] == VER_NDX_GLOBAL
    assert bound["malloc"] == 2 and bound["PyInit_rattler"] == VER_NDX_GLOBAL
    # once more changes nothing
    assert relax_optional_glibc(relaxed, (2, 17)) == (relaxed, [])


def test_a_version_a_strong_symbol_needs_stays() -> None:
    """``memcpy@GLIBC_2.28`` is called unconditionally: the file needs 2.28, and says so."""
    symbols = (Symbol(b"statx", b"GLIBC_2.28", weak=True), Symbol(b"memcpy", b"GLIBC_2.28"))
    elf = build_elf({b"libc.so.6": [b"GLIBC_2.17", b"GLIBC_2.28"]}, symbols=symbols)
    assert relax_optional_glibc(elf, (2, 17)) == (elf, [])
    # a weak symbol that a library defines itself is not optional either
    defined = (Symbol(b"statx", b"GLIBC_2.28", weak=True, defined=True),)
    elf = build_elf({b"libc.so.6": [b"GLIBC_2.28"]}, symbols=defined)
    assert relax_optional_glibc(elf, (2, 17)) == (elf, [])


def test_without_a_symbol_table_nothing_is_optional() -> None:
    elf = build_elf({b"libc.so.6": [b"GLIBC_2.17", b"GLIBC_2.28"]})
    assert relax_optional_glibc(elf, (2, 17)) == (elf, [])


def test_versions_at_or_below_the_floor_are_left_alone() -> None:
    elf = build_elf({b"libc.so.6": [b"GLIBC_2.17"]}, symbols=RATTLER_LIKE[2:])
    assert relax_optional_glibc(elf, (2, 17)) == (elf, [])
    assert relax_optional_glibc(b"MZ not an ELF file", (2, 17)) == (b"MZ not an ELF file", [])


def test_a_chain_of_only_optional_versions_keeps_one_flagged_weak() -> None:
    """The loader reads the first entry of every library's chain: one stays, flagged weak."""
    needs = {b"libc.so.6": [b"GLIBC_2.25", b"GLIBC_2.28"], b"libm.so.6": [b"GLIBC_2.17"]}
    elf = build_elf(needs, symbols=RATTLER_LIKE[:2])
    relaxed, symbols = relax_optional_glibc(elf, (2, 17))
    assert sorted(symbols) == ["getrandom@GLIBC_2.25", "statx@GLIBC_2.28"]
    assert [(n.library, n.name, n.weak) for n in version_needs(relaxed)] == [
        ("libc.so.6", "GLIBC_2.25", True),
        ("libm.so.6", "GLIBC_2.17", False),
    ]
    assert list(glibc_versions(relaxed)) == [(2, 17)]
