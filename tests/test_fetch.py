"""Fetching locked archives into the cache: what a cache hit is trusted with."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import rattler
from lockship.builder.fetch import fetch_packages
from lockship.builder.network import NetworkOptions, make_client
from lockship.builder.settings import Settings

from tests.factories import ChannelServer, write_conda_package


def md5_only(archive: Path, url: str) -> rattler.RepoDataRecord:
    """The archive's record as an old channel or explicit file gives it: an md5, no sha256."""
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(archive))
    record.sha256 = None
    record.md5 = hashlib.md5(archive.read_bytes()).digest()
    record.url = url
    return record


def test_an_md5_only_archive_is_checked_again_on_a_cache_hit(tmp_path: Path) -> None:
    channel, cache = tmp_path / "channel", tmp_path / "cache"
    defaults = Settings()
    client = make_client(NetworkOptions(), timeout=defaults.timeout)
    given = {"concurrency": defaults.concurrency, "retries": defaults.retries}
    first = write_conda_package(channel, "md5only", "1.0", files={"a.txt": "one"})
    with ChannelServer(channel) as server:
        url = f"{server.url}/noarch/{first.name}"
        [fetched] = fetch_packages([md5_only(first, url)], cache, client=client, **given)
        assert fetched.path.read_bytes() == first.read_bytes() and not fetched.from_cache
        [again] = fetch_packages([md5_only(first, url)], cache, client=client, **given)
        assert again.from_cache and again.sha256 == hashlib.sha256(first.read_bytes()).hexdigest()
        # the same URL now serves other bytes (a re-uploaded package), and the lock says so
        second = write_conda_package(channel, "md5only", "1.0", files={"a.txt": "two"})
        assert second == first
        [renewed] = fetch_packages([md5_only(second, url)], cache, client=client, **given)
    assert renewed.path.read_bytes() == second.read_bytes()
    assert renewed.sha256 == hashlib.sha256(second.read_bytes()).hexdigest()
    assert not renewed.from_cache
