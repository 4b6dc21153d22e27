"""What an installer carries, seen by the install core: the :class:`PackageSource` seam.

A source has a manifest and hands out its entries (package archives, wheels, the post-install
script) as verified streams: a stream raises before its last chunk if the bytes do not match
their sha256. :class:`PayloadSource` reads them out of an installer file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import Entry, Payload, iter_entry


class MissingEntry(InstallError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the installer has no entry named {name!r}; download it again")


class PackageSource(Protocol):
    """The manifest and the entries of an installer."""

    @property
    def manifest(self) -> Manifest: ...

    def size(self, name: str) -> int:
        """Bytes in entry ``name``; raises :class:`MissingEntry` if there is none."""

    def read(self, name: str) -> Iterator[bytes]:
        """Entry ``name``'s bytes, verified (the last chunk comes only once they matched)."""

    def digest(self, name: str) -> str:
        """The sha256 entry ``name`` has (its bytes are verified against it)."""


@dataclass(frozen=True)
class PayloadSource:
    """The entries of an installer file's payload, named in its manifest."""

    payload: Payload
    manifest: Manifest

    @cached_property
    def _entries(self) -> dict[str, Entry]:
        return {entry.name: entry for entry in self.payload.entries}

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise MissingEntry(name) from None

    def size(self, name: str) -> int:
        return self.entry(name).size

    def read(self, name: str) -> Iterator[bytes]:
        return iter_entry(self.payload, self.entry(name))

    def digest(self, name: str) -> str:
        return self.entry(name).sha256


def write_entry(source: PackageSource, name: str, target: Path) -> None:
    """Write entry ``name`` to ``target`` (a new file), verified; remove it on any failure."""
    try:
        with open(target, "xb") as out:
            for chunk in source.read(name):
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
