"""``--check``: every byte of the installer file against what was recorded when it was built.

The regions before the payload (the shell header, the program) carry sha256s in the manifest,
every entry one in the index, and the index one in the trailer. What ties them together is
checked too: the regions cover the file from byte 0 to the payload, the entries lie back to back
up to the index, so a damaged offset in the trailer is caught like a damaged byte anywhere else.
Not covered: an Authenticode signature's own bytes (the certificate table, its padding and the
two header fields signing rewrites), which ``osslsigncode verify`` / ``signtool verify`` check.
"""

from __future__ import annotations

from pathlib import Path

from lockship.stub.errors import InstallError
from lockship.stub.shared.boundary import SHA256SUMS, file_sha256, parse_checksums
from lockship.stub.shared.manifest import Manifest, Region
from lockship.stub.shared.payload import Payload, range_sha256, verify_payload


class DamagedRegion(InstallError):
    def __init__(self, region: Region) -> None:
        self.region = region
        last = region.offset + region.size - 1
        super().__init__(
            f"{region.name} (bytes {region.offset:,} to {last:,}) is damaged; "
            "download the installer again"
        )


class DamagedLayout(InstallError):
    def __init__(self, what: str) -> None:
        super().__init__(f"the installer's layout is damaged ({what}); download it again")


def verify_installer(payload: Payload, manifest: Manifest) -> int:
    """Raise naming the first damaged part of the file; return how many parts were verified."""
    _check_layout(payload, manifest)
    for region in manifest.regions:
        actual = range_sha256(payload.path, region.offset, region.size, region.zeroed)
        if actual != region.sha256:
            raise DamagedRegion(region)
    verify_payload(payload)
    return len(manifest.regions) + len(payload.entries)


def _check_layout(payload: Payload, manifest: Manifest) -> None:
    if not manifest.regions:
        return  # an installer from before regions were recorded: its entries are still checked
    position = 0
    for region in sorted(manifest.regions, key=lambda r: r.offset):
        if region.offset != position:
            raise DamagedLayout(f"nothing describes the bytes at {position:,}")
        position += region.size
    if position != payload.payload_offset:
        raise DamagedLayout(f"the payload should begin at byte {position:,}")
    for entry in sorted(payload.entries, key=lambda e: e.offset):
        if entry.offset != position:
            raise DamagedLayout(f"nothing describes the bytes at {position:,}")
        position += entry.size
    if position != payload.index_offset:
        raise DamagedLayout(f"the index should begin at byte {position:,}")


def verify_listed_sha256(installer: Path) -> str | None:
    """The installer's sha256 if a ``SHA256SUMS`` beside it (lockship build writes one) lists
    it and agrees; None if none lists it; raise if they disagree."""
    try:
        text = (installer.parent / SHA256SUMS).read_text(encoding="utf-8")
    except OSError:
        return None
    listed = parse_checksums(text).get(installer.name)
    if listed is None:
        return None
    actual = file_sha256(installer)
    if actual != listed:
        raise InstallError(
            f"{installer.name} does not match {installer.parent / SHA256SUMS} "
            f"(sha256 {actual}, listed {listed}); download it again"
        )
    return actual
