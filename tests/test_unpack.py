"""Worker processes unpack real archives out of an installer file, verified, and rattler links
from what they unpacked without unpacking again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import rattler
from lockship.stub.errors import InstallError
from lockship.stub.shared.payload import (
    Entry,
    EntryChecksumMismatch,
    Payload,
    PayloadError,
    read_payload,
)
from lockship.stub.unpack import (
    UnpackJob,
    WorkersUnavailable,
    copy_range,
    layer_cache,
    unpack_archives,
)
from rattler import Channel, RepoData

from tests.factories import index_channel, write_conda_package, write_payload

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="worker processes unpack on Linux only"
)
PLACEHOLDER = "/opt/placeholder_" + "x" * 40


def make_channel(root: Path) -> tuple[Path, list[Path]]:
    channel = root / "channel"
    archives = [
        write_conda_package(
            channel,
            "alpha",
            "1.0",
            files={
                "share/alpha.txt": f"installed at {PLACEHOLDER}\n",
                "bin/tool": os.urandom(2000),
            },
            text_placeholders={"share/alpha.txt": PLACEHOLDER},
        ),
        write_conda_package(
            channel, "beta", "2.0", files={"share/beta.bin": os.urandom(300_000)}, fmt=".tar.bz2"
        ),
        write_conda_package(channel, "gamma", "3.0", files={"share/gamma.txt": "g\n" * 5000}),
    ]
    index_channel(channel, write_shards=False)
    return channel, archives


def make_installer(root: Path, archives: list[Path]) -> Payload:
    """An installer file: a preamble, then a payload holding the archives."""
    installer = root / "installer.sh"
    with open(installer, "wb") as out:
        out.write(b"#!/bin/sh\nexit 1\n" + b"\0" * 4000)
        write_payload(out, [(f"noarch/{a.name}", a) for a in archives], {})
    return read_payload(installer)


def jobs_for(root: Path, entries: Sequence[Entry]) -> list[UnpackJob]:
    staged = root / "stage" / "pkgs"
    staged.mkdir(parents=True)
    cache = root / "stage" / "cache"
    return [
        UnpackJob(
            e,
            staged / Path(e.name).name,
            cache / Path(e.name).name.removesuffix(".conda").removesuffix(".tar.bz2"),
        )
        for e in entries
    ]


def damage(payload: Payload, entry: Entry) -> None:
    with open(payload.path, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@linux_only
def test_unpacked_archives_are_linked_without_unpacking_again(tmp_path: Path) -> None:
    channel, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)
    advanced: list[int] = []
    unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, advanced.append)
    assert sorted(advanced) == sorted(e.size for e in payload.entries)
    # the archives were streamed through pipes, which are gone: nothing but the unpacked folders
    assert list((tmp_path / "stage" / "pkgs").iterdir()) == []
    cache = tmp_path / "stage" / "cache"
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [
        "alpha-1.0-0",
        "beta-2.0-0",
        "gamma-3.0-0",
    ]

    records = RepoData.from_path(channel / "noarch" / "repodata.json").into_repo_data(
        Channel(channel.as_uri())
    )
    prefix = tmp_path / "env"
    asyncio.run(
        rattler.install(records, prefix, package_cache=layer_cache(cache), show_progress=False)
    )
    # rattler linked the workers' files (the same inodes) instead of unpacking the archives again
    linked = prefix / "share" / "beta.bin"
    assert linked.stat().st_ino == (cache / "beta-2.0-0" / "share" / "beta.bin").stat().st_ino
    # ... and still relocated the file that carries the prefix placeholder
    assert (prefix / "share" / "alpha.txt").read_text() == f"installed at {prefix}\n"


@linux_only
def test_a_wrong_sha256_stops_the_unpacking(tmp_path: Path) -> None:
    _, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)
    entries = list(payload.entries)
    entries[1] = Entry(entries[1].name, entries[1].offset, entries[1].size, "0" * 64)
    with pytest.raises(EntryChecksumMismatch, match=r"noarch/beta-2.0-0.tar.bz2 is corrupt"):
        unpack_archives(payload, jobs_for(tmp_path, entries), 2, lambda n: None)
    assert list((tmp_path / "stage" / "pkgs").iterdir()) == []  # no pipe left behind


@linux_only
def test_damaged_bytes_are_reported_as_damage_not_as_a_decompression_error(
    tmp_path: Path,
) -> None:
    _, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)
    damaged = payload.entries[
        2
    ]  # gamma: compressible text, so a flipped byte breaks the zstd frame
    damage(payload, damaged)
    with pytest.raises(EntryChecksumMismatch, match=rf"{damaged.name} is corrupt inside"):
        unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, lambda n: None)


@linux_only
def test_an_archive_rattler_cannot_read_fails_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage-1.0-0.conda"
    garbage.write_bytes(os.urandom(5000))
    payload = make_installer(tmp_path, [garbage])
    with pytest.raises(InstallError, match=r"^unpacking noarch/garbage-1.0-0.conda failed: "):
        unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, lambda n: None)


@linux_only
def test_a_truncated_installer_is_reported_as_such(tmp_path: Path) -> None:
    _, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)
    last = max(payload.entries, key=lambda e: e.offset)
    os.truncate(payload.path, last.offset + last.size // 2)
    with pytest.raises(PayloadError, match=rf"ends inside {last.name}"):
        unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, lambda n: None)


@linux_only
def test_a_worker_that_dies_fails_the_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed for lack of memory, say: the installer must fail, not wait forever."""
    _, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)

    def killed(archive: object, folder: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr("lockship.stub.unpack.extract", killed)  # the forked workers inherit it
    with pytest.raises(InstallError, match=r"^a process unpacking the packages died"):
        unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, lambda n: None)
    assert list((tmp_path / "stage" / "pkgs").iterdir()) == []


@linux_only
def test_no_worker_processes_here_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, archives = make_channel(tmp_path)
    payload = make_installer(tmp_path, archives)

    def no_semaphores(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("lockship.stub.unpack.ProcessPoolExecutor", no_semaphores)
    with pytest.raises(WorkersUnavailable, match="cannot start worker processes: "):
        unpack_archives(payload, jobs_for(tmp_path, payload.entries), 2, lambda n: None)
    assert list((tmp_path / "stage" / "pkgs").iterdir()) == []
    assert not (tmp_path / "stage" / "cache").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="os.splice is Linux-only")
@pytest.mark.parametrize("into", ["file", "pipe"])
def test_copy_range_copies_exactly_the_range(tmp_path: Path, into: str) -> None:
    source = tmp_path / "source"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    size = 2 * 1024 * 1024 + 5
    received = bytearray()
    with open(source, "rb") as src:
        if into == "file":
            with open(tmp_path / "target", "wb") as dst:
                copy_range(src, dst, 1000, size)
            received += (tmp_path / "target").read_bytes()
        else:
            read_end, write_end = os.pipe()
            reader = threading.Thread(
                target=lambda: received.extend(iter_fd(read_end)), name="reader"
            )
            reader.start()
            with open(write_end, "wb", buffering=0) as dst:
                copy_range(src, dst, 1000, size)
            reader.join()
    assert bytes(received) == data[1000 : 1000 + size]
    with open(source, "rb") as src, open(tmp_path / "short", "wb") as dst:
        copy_range(src, dst, len(data) - 10, 20)  # the source ends: a short copy, no error
    assert (tmp_path / "short").read_bytes() == data[-10:]


def iter_fd(fd: int) -> bytes:
    with open(fd, "rb", buffering=0) as f:
        return f.read()
