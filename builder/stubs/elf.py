"""The glibc symbol versions an ELF file needs, read from its ``SHT_GNU_VERNEED`` section.

Only section headers are read (``strip`` keeps them); 32- and 64-bit files of either byte order.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

ELF_MAGIC = b"\x7fELF"
SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC_VERSION = re.compile(rb"GLIBC_(\d+(?:\.\d+)+)")


def glibc_versions(elf: bytes) -> Iterator[tuple[int, ...]]:
    """Every ``GLIBC_x.y`` an ELF file needs, as ``(x, y)``; nothing for other files."""
    if not elf.startswith(ELF_MAGIC):
        return
    order = "<" if elf[5] == 1 else ">"
    if elf[4] == 2:  # ELFCLASS64
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
        if kind != SHT_GNU_VERNEED:
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


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"2.28"`` -> ``(2, 28)``; None for anything that is not dotted numbers."""
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        return None
    return tuple(int(x) for x in text.split("."))


def format_version(version: tuple[int, ...] | None) -> str | None:
    return ".".join(str(x) for x in version) if version else None
