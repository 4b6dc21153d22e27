"""What an installer carries, seen by the install core: the :class:`PackageSource` seam.

A source hands out its entries (package archives, wheels, the post-install script) as
verified streams: a stream raises before its last chunk if the bytes do not match their sha256.
What the entries are, and what to do with them, is the manifest's business (the install plan
carries it). :class:`PayloadSource` reads them out of an installer file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from lockship.stub.errors import InstallError
from lockship.stub.shared.payload import Entry, Payload, iter_entry


class MissingEntry(InstallError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the installer has no entry named {name!r}; download it again")


@dataclass(frozen=True)
class StoredEntry:
    """An entry whose bytes lie as-is in an installer file: ``entry.size`` bytes at
    ``entry.offset`` of ``payload.path``, hashing to ``entry.sha256``."""

    payload: Payload
    entry: Entry


class PackageSource(Protocol):
    """The entries of an installer. Each method raises :class:`MissingEntry` for a name the
    source does not have."""

    def read(self, name: str) -> Iterator[bytes]:
        """Entry ``name``'s bytes, verified (the last chunk comes only once they matched)."""

    def digest(self, name: str) -> str:
        """The sha256 entry ``name`` has (its bytes are verified against it)."""

    def locate(self, name: str) -> StoredEntry | None:
        """Where entry ``name`` lies as-is in a file, for a reader that takes the file itself
        (worker processes splice it into a pipe); None when the bytes are not stored so."""


@dataclass(frozen=True)
class PayloadSource:
    """The entries of an installer file's payload."""

    payload: Payload

    @cached_property
    def _entries(self) -> dict[str, Entry]:
        return {entry.name: entry for entry in self.payload.entries}

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise MissingEntry(name) from None

    def read(self, name: str) -> Iterator[bytes]:
        return iter_entry(self.payload, self.entry(name))

    def digest(self, name: str) -> str:
        return self.entry(name).sha256

    def locate(self, name: str) -> StoredEntry:
        return StoredEntry(self.payload, self.entry(name))


def write_entry(source: PackageSource, name: str, target: Path) -> None:
    """Write entry ``name`` to ``target`` (a new file), verified; remove it on any failure."""
    try:
        with open(target, "xb") as out:
            for chunk in source.read(name):
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
