"""``@EXPLICIT`` inputs go through the one download path: verified before they enter the cache,
retried, downloaded once, and a local archive is read again at every build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import rattler
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import ChannelServer, channel_records, write_conda_package, write_stand_in_stub
from tests.runners import Run, run_lockship

PLATFORM = DEMO_PLATFORM


@pytest.fixture
def stand_in_stub(tmp_path: Path) -> Path:
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    return stub


def explicit_file(path: Path, urls: list[str]) -> Path:
    path.write_text(f"# platform: {PLATFORM}\n@EXPLICIT\n" + "".join(u + "\n" for u in urls))
    return path


def with_md5(records: list[rattler.RepoDataRecord]) -> list[str]:
    return [f"{r.url}#{r.md5.hex()}" for r in records if r.md5]


def build(explicit: Path, stub: Path, cache: Path, out: Path, *args: str) -> Run:
    return run_lockship(
        "build", explicit, "--stub", stub, "--cache-dir", cache, "-o", out, "--retries", "1", *args
    )


def shipped(run: Run) -> Manifest:
    assert run.returncode == 0, run.stderr
    return Manifest.from_dict(read_payload(Path(run.stdout.split()[-1])).metadata)


def test_each_archive_is_downloaded_once_and_retried(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        lines = explicit_file(tmp_path / "env.txt", with_md5(records))
        paths = [f"{r.subdir}/{r.file_name}" for r in records]
        server.fail_first_n[paths[0]] = 1
        cold = build(lines, stand_in_stub, tmp_path / "cache", tmp_path / "o1")
        downloads = {p: server.request_count(p) for p in paths}
        warm = build(lines, stand_in_stub, tmp_path / "cache", tmp_path / "o2")
        again = {p: server.request_count(p) for p in paths}
    manifest = shipped(cold)
    assert downloads == {p: 2 if p == paths[0] else 1 for p in paths}  # one retry, no 2nd copy
    assert again == downloads  # nothing downloaded by the warm build
    assert shipped(warm).packages == manifest.packages
    assert {p.name: p.sha256 for p in manifest.packages} == {
        r.name.normalized: r.sha256.hex() for r in records if r.sha256
    }


def test_a_wrong_md5_lets_nothing_into_the_cache(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        urls = with_md5(records)
        urls[0] = urls[0].rsplit("#", 1)[0] + "#" + "0" * 32
        run = build(
            explicit_file(tmp_path / "e.txt", urls), stand_in_stub, tmp_path / "c", tmp_path
        )
    assert run.returncode == 1
    assert run.error_lines[0].startswith(
        f"ERROR: {records[0].file_name} does not match the lockfile: md5 "
        f"{records[0].md5.hex() if records[0].md5 else ''}, expected {'0' * 32}; "
    )
    assert not list((tmp_path / "c").rglob(records[0].file_name))
    assert not list((tmp_path / "c").rglob("*.part"))


def test_a_local_archive_is_read_again_at_every_build(tmp_path: Path, stand_in_stub: Path) -> None:
    def package(text: str) -> Path:
        return write_conda_package(
            tmp_path / "local", "mine", "1.0", subdir=PLATFORM, files={"share/mine.txt": text}
        )

    archive = package("first")
    lines = explicit_file(tmp_path / "e.txt", [archive.resolve().as_uri()])
    first = shipped(build(lines, stand_in_stub, tmp_path / "c", tmp_path / "o1"))
    archive = package("second, rebuilt")
    second = shipped(build(lines, stand_in_stub, tmp_path / "c", tmp_path / "o2"))
    new = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [p.sha256 for p in second.packages] == [new]
    assert [p.sha256 for p in first.packages] != [new]
