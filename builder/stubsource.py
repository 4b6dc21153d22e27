"""Where each platform's installer stub comes from.

In this order: ``--stub PLATFORM=PATH``; a stub folder (``--stub-dir`` or ``$LOCKSHIP_STUB_DIR``)
holding ``lockship-stub-<platform>[.exe]``; the local stub cache; for this machine's platform,
a fresh freeze with PyInstaller; for other platforms, a download of lockship's published stubs
for this version (base URL ``$LOCKSHIP_STUB_URL``), verified against the published sha256
manifest and cached.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lockship import stub
from lockship.builder.errors import FetchError, StubError
from lockship.builder.fetch import download_url, hash_file
from lockship.builder.stubs import (
    cached_stub_path,
    facts_path,
    freeze_stub,
    host_platform,
    stub_file_name,
)
from rattler import Client

STUB_DIR_ENV = "LOCKSHIP_STUB_DIR"
STUB_URL_ENV = "LOCKSHIP_STUB_URL"
DEFAULT_STUB_URL = "https://github.com/lockship/lockship/releases/download"
MANIFEST_NAME = "lockship-stubs.sha256"


def release_url() -> str:
    base = os.environ.get(STUB_URL_ENV, DEFAULT_STUB_URL).rstrip("/")
    return f"{base}/v{stub.__version__}"


def find_stubs(
    platforms: Sequence[str],
    cache_dir: Path,
    *,
    explicit: Mapping[str, Path] | None = None,
    stub_dir: Path | None = None,
    client: Client | None = None,
    on_freeze: Callable[[str], None] = lambda _: None,
    dry_run: bool = False,
) -> dict[str, Path]:
    """A stub for every platform, or StubError naming the first platform without one.

    With ``dry_run`` nothing is frozen or downloaded; platforms without a local stub are left
    out of the result.
    """
    explicit = explicit or {}
    folder = stub_dir or (Path(os.environ[STUB_DIR_ENV]) if os.environ.get(STUB_DIR_ENV) else None)
    found: dict[str, Path] = {}
    missing = []
    for platform in platforms:
        if platform in explicit:
            if not explicit[platform].is_file():
                raise StubError(f"the stub {explicit[platform]} for {platform} does not exist")
            found[platform] = explicit[platform]
            continue
        if folder is not None and (folder / stub_file_name(platform)).is_file():
            found[platform] = folder / stub_file_name(platform)
            continue
        cached = cached_stub_path(cache_dir, platform)
        if cached.is_file():
            found[platform] = cached
            continue
        missing.append(platform)
    if dry_run:
        return found
    for platform in missing:
        cached = cached_stub_path(cache_dir, platform)
        if platform == host_platform():
            on_freeze(f"Freezing the installer stub for {platform} with PyInstaller (once)...")
            found[platform] = freeze_stub(cached, on_line=on_freeze)
            continue
        try:
            found[platform] = download_stub(platform, cached, client or Client(timeout=60))
        except (FetchError, StubError) as e:
            raise StubError(
                f"no installer stub for {platform}: pass --stub {platform}=PATH, or put "
                f"{stub_file_name(platform)} into a folder given with --stub-dir (or "
                f"${STUB_DIR_ENV}), or make {release_url()}/{stub_file_name(platform)} "
                f"reachable (set ${STUB_URL_ENV} for a mirror); the download failed: {e}"
            ) from e
    return found


def download_stub(platform: str, target: Path, client: Client) -> Path:
    """Download a published stub, verify it against the published manifest, cache it."""
    base = release_url()
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest = target.with_name(f".{MANIFEST_NAME}.{os.getpid()}")
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        asyncio.run(download_url(client, f"{base}/{MANIFEST_NAME}", manifest))
        expected = _manifest_entry(manifest.read_text(encoding="utf-8"), stub_file_name(platform))
        asyncio.run(download_url(client, f"{base}/{stub_file_name(platform)}", partial))
        actual = hash_file(partial)[0]
        if actual != expected:
            raise StubError(
                f"the downloaded {stub_file_name(platform)} has sha256 {actual}, but "
                f"{MANIFEST_NAME} says {expected}"
            )
        partial.chmod(0o755)
        # the sidecar (glibc floor etc.) is published next to the stub; older releases lack it
        sidecar = facts_path(target)
        sidecar_part = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.part")
        try:
            asyncio.run(
                download_url(client, f"{base}/{stub_file_name(platform)}.json", sidecar_part)
            )
            sidecar_part.replace(sidecar)
        except FetchError:
            sidecar_part.unlink(missing_ok=True)
        partial.replace(target)
    finally:
        manifest.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return target


def _manifest_entry(text: str, name: str) -> str:
    for line in text.splitlines():
        digest, _, file_name = line.strip().partition("  ")
        if file_name.lstrip("*") == name and len(digest) == 64:
            return digest
    raise StubError(f"{MANIFEST_NAME} lists no {name}")
