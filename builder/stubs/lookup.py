"""Where each platform's installer stub comes from: the one lookup policy.

In this order: ``--stub PLATFORM=PATH``; a stub folder (``--stub-dir`` or ``$LOCKSHIP_STUB_DIR``)
holding ``lockship-stub-<platform>[.exe]``; the local stub cache (a stub with its sidecar); for
this machine's platform, a fresh freeze with PyInstaller; for other platforms, a download of
lockship's published stubs and sidecars for this version (base URL ``$LOCKSHIP_STUB_URL``) with
the build's HTTP client, verified against the published sha256 manifest and cached.

``lockship build``, the test suite's ``frozen_stub`` fixture and ``scripts/bench.py`` all call
:func:`find_stubs`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lockship import stub
from lockship.builder.errors import FetchError, StubError
from lockship.builder.fetch import download_url, download_verified, with_retries
from lockship.builder.paths import host_platform
from lockship.builder.stubs.facts import (
    StubFacts,
    cached_stub_path,
    facts_path,
    stub_facts,
    stub_file_name,
)
from lockship.builder.stubs.freeze import freeze_stub
from lockship.stub.shared.boundary import file_sha256, parse_checksums
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
    client: Client,
    explicit: Mapping[str, Path] | None = None,
    stub_dir: Path | None = None,
    retries: int,
    on_freeze: Callable[[str], None] = lambda _: None,
    dry_run: bool = False,
) -> dict[str, Path]:
    """A stub for every platform, or StubError naming the first platform without one.

    Downloads go through ``client`` (the build's: its timeout, mirrors and credentials). With
    ``dry_run`` nothing is frozen or downloaded; platforms without a local stub are left out.
    """
    found = {p: path for p in platforms if (path := _local_stub(p, cache_dir, explicit, stub_dir))}
    if dry_run:
        return found
    for platform in [p for p in platforms if p not in found]:
        cached = cached_stub_path(cache_dir, platform)
        if platform == host_platform():
            on_freeze(f"Freezing the installer stub for {platform} with PyInstaller (once)...")
            freeze_stub(cached, on_line=on_freeze)
            found[platform] = cached
            continue
        try:
            found[platform] = asyncio.run(download_stub(platform, cached, client, retries))
        except (FetchError, StubError) as e:
            raise StubError(
                f"no installer stub for {platform}: pass --stub {platform}=PATH, or put "
                f"{stub_file_name(platform)} into a folder given with --stub-dir (or "
                f"${STUB_DIR_ENV}), or make {release_url()}/{stub_file_name(platform)} "
                f"reachable (set ${STUB_URL_ENV} for a mirror); the download failed: {e}"
            ) from e
    return found


def _local_stub(
    platform: str, cache_dir: Path, explicit: Mapping[str, Path] | None, stub_dir: Path | None
) -> Path | None:
    """The stub for ``platform`` that needs no freeze and no download, if there is one."""
    if explicit and platform in explicit:
        if not explicit[platform].is_file():
            raise StubError(f"the stub {explicit[platform]} for {platform} does not exist")
        return explicit[platform]
    folder = stub_dir or (Path(os.environ[STUB_DIR_ENV]) if os.environ.get(STUB_DIR_ENV) else None)
    if folder is not None and (folder / stub_file_name(platform)).is_file():
        return folder / stub_file_name(platform)
    cached = cached_stub_path(cache_dir, platform)
    return cached if cached.is_file() and _has_facts(cached) else None


def _has_facts(stub_path: Path) -> bool:
    """Whether a cached stub has its sidecar, of its size (the build checks its sha256)."""
    try:
        return stub_facts(stub_path, verify=False) is not None
    except StubError:
        return False


async def download_stub(platform: str, target: Path, client: Client, retries: int) -> Path:
    """Download a published stub and its sidecar, check both against the published manifest
    (and the sidecar against the stub), and cache them (the sidecar first, so a cached stub
    always has one)."""
    base, name = release_url(), stub_file_name(platform)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".manifest-", dir=folder) as tmp:
        manifest = Path(tmp) / MANIFEST_NAME
        url = f"{base}/{MANIFEST_NAME}"
        await with_retries(lambda: download_url(client, url, manifest), retries)
        sums = parse_checksums(manifest.read_text(encoding="utf-8"))
    # the release lists each stub and its sidecar (.github/workflows/release.yml)
    expected, expected_sidecar = sums.get(name), sums.get(f"{name}.json")
    if expected is None or expected_sidecar is None:
        missing = name if expected is None else f"{name}.json"
        raise StubError(f"{MANIFEST_NAME} lists no {missing}")

    def place_sidecar(part: Path) -> tuple[Path, str]:
        actual = file_sha256(part)
        if actual != expected_sidecar:
            raise StubError(
                f"the downloaded {name}.json has sha256 {actual}, but {MANIFEST_NAME} says "
                f"{expected_sidecar}"
            )
        try:
            facts = StubFacts.from_json(json.loads(part.read_text(encoding="utf-8")))
        except ValueError as e:
            raise StubError(f"the published {name}.json is not a stub sidecar: {e}") from e
        if facts.sha256 != expected or facts.platform != platform:
            raise StubError(f"the published {name}.json describes another stub than {name}")
        return facts_path(target), actual

    def place_stub(part: Path) -> tuple[Path, str]:
        actual = file_sha256(part)
        if actual != expected:
            raise StubError(
                f"the downloaded {name} has sha256 {actual}, but {MANIFEST_NAME} says {expected}"
            )
        return target, actual

    await download_verified(
        client, f"{base}/{name}.json", folder, retries=retries, place=place_sidecar
    )
    await download_verified(client, f"{base}/{name}", folder, retries=retries, place=place_stub)
    target.chmod(0o755)
    return target
