"""The glibc symbol versions an ELF file needs, and making the optional ones optional.

An ELF file names each symbol version it needs from a library in its ``SHT_GNU_VERNEED``
section (an ``Elf_Vernaux`` entry per version); the dynamic loader refuses to start a program
or load a library when one is missing, unless the entry is flagged ``VER_FLG_WEAK``. Each
dynamic symbol points at one of those entries through ``SHT_GNU_VERSYM``, and is looked up by
that version: a weak symbol tied to a version the C library lacks fails to bind ("not defined
in file libc.so.6 with link time reference") where an unversioned one is simply absent.

:func:`relax_optional_glibc` is for a library whose newer-than-the-floor versions are needed
only by *weak* undefined symbols, functions it calls when they exist and does without
otherwise (Rust's standard library does so for ``statx``, ``getrandom``, ``copy_file_range``
and ``__cxa_thread_atexit_impl``; py-rattler's aarch64 wheel, linked against glibc 2.28, needs
those versions for nothing else). It binds those symbols by name instead of by version and
takes the entries out of their library's chain, so neither the loader nor a reader such as
auditwheel sees them: an older glibc loads the library with the symbols absent (null), a newer
one binds each to its default version.

Only section headers are read (``strip`` keeps them); 32- and 64-bit files of either byte order.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
SHT_DYNSYM = 11
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_GNU_VERSYM = 0x6FFFFFFF
VER_FLG_WEAK = 0x2
#: the ``SHT_GNU_VERSYM`` index of a symbol bound by name alone
VER_NDX_GLOBAL = 1
STB_WEAK = 2
SHN_UNDEF = 0
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class VersionNeed:
    """One ``Elf_Vernaux`` entry: a version needed from a library."""

    library: str
    name: str
    #: its index, which ``SHT_GNU_VERSYM`` entries point at (``vna_other``)
    index: int
    weak: bool
    #: where it lies in the file, and the ``Elf_Verneed`` entry whose chain holds it
    at: int
    entry_at: int

    @property
    def glibc(self) -> tuple[int, ...] | None:
        match = _GLIBC_VERSION.fullmatch(self.name.encode())
        return tuple(int(x) for x in match.group(1).split(b".")) if match else None


@dataclass(frozen=True)
class DynamicSymbol:
    name: str
    weak: bool
    undefined: bool
    #: where its ``SHT_GNU_VERSYM`` entry lies in the file, and the index it holds
    version_at: int
    version: int


class _Elf:
    """The section headers of an ELF file, and reading of the structures they locate."""

    def __init__(self, elf: bytes) -> None:
        self.data = elf
        self.order = "<" if elf[5] == 1 else ">"
        self.wide = elf[4] == 2  # ELFCLASS64
        if self.wide:
            (shoff,) = struct.unpack_from(self.order + "Q", elf, 0x28)
            shentsize, shnum = struct.unpack_from(self.order + "HH", elf, 0x3A)
            header = self.order + "IIQQQQII"
        else:
            (shoff,) = struct.unpack_from(self.order + "I", elf, 0x20)
            shentsize, shnum = struct.unpack_from(self.order + "HH", elf, 0x2E)
            header = self.order + "IIIIIIII"
        # name, type, flags, address, offset, size, link, info
        self.sections = [
            struct.unpack_from(header, elf, shoff + i * shentsize) for i in range(shnum)
        ]

    def string(self, table: int, at: int) -> str:
        start = self.sections[table][4] + at
        return self.data[start : self.data.index(b"\0", start)].decode("utf-8", "replace")

    def version_needs(self) -> Iterator[VersionNeed]:
        for _, kind, _, _, offset, _, link, count in self.sections:
            if kind != SHT_GNU_VERNEED:
                continue
            for _ in range(count):  # Elf_Verneed: version, aux count, file, aux offset, next
                _, aux_count, file, aux, next_need = struct.unpack_from(
                    self.order + "HHIII", self.data, offset
                )
                at = offset + aux
                for _ in range(aux_count):  # Elf_Vernaux: hash, flags, other, name, next
                    _, flags, other, name, next_aux = struct.unpack_from(
                        self.order + "IHHII", self.data, at
                    )
                    yield VersionNeed(
                        library=self.string(link, file),
                        name=self.string(link, name),
                        index=other & 0x7FFF,
                        weak=bool(flags & VER_FLG_WEAK),
                        at=at,
                        entry_at=offset,
                    )
                    at += next_aux
                offset += next_need

    def dynamic_symbols(self) -> Iterator[DynamicSymbol]:
        kinds = [section[1] for section in self.sections]
        if SHT_DYNSYM not in kinds or SHT_GNU_VERSYM not in kinds:
            return
        _, _, _, _, offset, size, link, _ = self.sections[kinds.index(SHT_DYNSYM)]
        versions = self.sections[kinds.index(SHT_GNU_VERSYM)][4]
        entry = 24 if self.wide else 16
        for i in range(size // entry):
            at = offset + i * entry
            if self.wide:  # Elf64_Sym: name, info, other, shndx, value, size
                name, info, _, shndx = struct.unpack_from(self.order + "IBBH", self.data, at)
            else:  # Elf32_Sym: name, value, size, info, other, shndx
                name, _, _, info, _, shndx = struct.unpack_from(
                    self.order + "IIIBBH", self.data, at
                )
            (version,) = struct.unpack_from(self.order + "H", self.data, versions + 2 * i)
            yield DynamicSymbol(
                name=self.string(link, name),
                weak=info >> 4 == STB_WEAK,
                undefined=shndx == SHN_UNDEF,
                version_at=versions + 2 * i,
                version=version & 0x7FFF,
            )


def version_needs(elf: bytes) -> list[VersionNeed]:
    """The versions an ELF file needs from its libraries; none for other files."""
    return list(_Elf(elf).version_needs()) if elf.startswith(ELF_MAGIC) else []


def dynamic_symbols(elf: bytes) -> list[DynamicSymbol]:
    """An ELF file's dynamic symbols with their version indexes; none without versions."""
    return list(_Elf(elf).dynamic_symbols()) if elf.startswith(ELF_MAGIC) else []


def glibc_versions(elf: bytes) -> Iterator[tuple[int, ...]]:
    """Every ``GLIBC_x.y`` an ELF file needs, as ``(x, y)``; nothing for other files. Entries
    flagged weak are left out: the loader does without them."""
    for need in version_needs(elf):
        if need.glibc is not None and not need.weak:
            yield need.glibc


def relax_optional_glibc(elf: bytes, floor: tuple[int, ...]) -> tuple[bytes, list[str]]:
    """``elf`` with every glibc version above ``floor`` that only weak undefined symbols need
    made optional (see the module's text), and those symbols as ``name@GLIBC_x.y``. A version
    that anything else needs is left as it is, so the file still needs it."""
    if not elf.startswith(ELF_MAGIC):
        return elf, []
    parsed = _Elf(elf)
    symbols = list(parsed.dynamic_symbols())
    if not symbols:  # no symbol table to tell which symbols need what: nothing is optional
        return elf, []
    order = parsed.order
    patched = bytearray(elf)
    relaxed: list[str] = []
    chains: dict[int, list[VersionNeed]] = {}
    for need in parsed.version_needs():
        chains.setdefault(need.entry_at, []).append(need)
    for entry_at, chain in chains.items():
        kept = []
        for need in chain:
            users = [s for s in symbols if s.version == need.index]
            optional = all(s.weak and s.undefined for s in users)
            if need.glibc is None or need.glibc <= floor or need.weak or not optional:
                kept.append(need)
                continue
            for symbol in users:
                struct.pack_into(order + "H", patched, symbol.version_at, VER_NDX_GLOBAL)
                relaxed.append(f"{symbol.name}@{need.name}")
        if len(kept) == len(chain):
            continue
        if not kept:  # the loader reads one entry of every chain: keep the first, flagged weak
            first = chain[0]
            (flags,) = struct.unpack_from(order + "H", elf, first.at + 4)
            struct.pack_into(order + "H", patched, first.at + 4, flags | VER_FLG_WEAK)
            kept = [first]
        # Elf_Verneed: its count and the offset of its first entry; each entry's next offset
        struct.pack_into(order + "H", patched, entry_at + 2, len(kept))
        struct.pack_into(order + "I", patched, entry_at + 8, kept[0].at - entry_at)
        for need, after in zip(kept, [*kept[1:], None], strict=True):
            struct.pack_into(order + "I", patched, need.at + 12, after.at - need.at if after else 0)
    return bytes(patched), relaxed


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"2.28"`` -> ``(2, 28)``; None for anything that is not dotted numbers."""
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        return None
    return tuple(int(x) for x in text.split("."))


def format_version(version: tuple[int, ...] | None) -> str | None:
    return ".".join(str(x) for x in version) if version else None
