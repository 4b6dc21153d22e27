"""Every conda archive is checked in full at build time: hand-made archives, one per defect,
and a valid one whose zip entries carry zip64 extra fields."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from lockship.builder.archives.validate import DamagedArchive, UnsafeArchive, validate_archive
from rattler.package_streaming import PackageArchive

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
)
from tests.runners import run_installer, run_lockship


def rezip_with_zip64_extras(archive: Path) -> Path:
    """Rewrite a stored ``.conda`` the way rattler-build writes them: every local and central
    header carries a zip64 extended information field although no size needs one."""
    with zipfile.ZipFile(archive) as zf:
        entries = [(info, zf.read(info.filename)) for info in zf.infolist()]
    body, central = bytearray(), bytearray()
    for info, data in entries:
        name, crc, offset = info.filename.encode(), zlib.crc32(data), len(body)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        body += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, len(data), len(data),
            len(name), len(extra),
        )  # fmt: skip
        body += name + extra + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, len(data), len(data),
            len(name), len(extra), 0, 0, 0, info.external_attr, offset,
        )  # fmt: skip
        central += name + extra
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0
    )
    archive.write_bytes(bytes(body + central + end))
    return archive


def paths_json(*entries: dict[str, object]) -> str:
    return json.dumps({"paths": list(entries), "paths_version": 1})


def refusal(archive: Path) -> str:
    with pytest.raises((DamagedArchive, UnsafeArchive)) as caught:
        validate_archive(archive)
    return str(caught.value)


def test_a_hard_link_without_a_target_is_refused(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "zlib", "1.2.11", files={"lib/libz.so": "z"},
        raw_members=[("hardlink", "lib/libz.so.1", "")],
    )  # fmt: skip
    assert refusal(archive) == (
        "zlib-1.2.11-0.conda is damaged: the hard link lib/libz.so.1 has no target; it would "
        "fail to install on the target machine: rebuild or re-pack the package, or leave it out "
        "of the environment"
    )


def test_a_hard_link_to_a_missing_file_is_refused(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "links", "1.0", files={"lib/a": "a"}, fmt=".tar.bz2",
        raw_members=[("hardlink", "lib/b", "lib/missing")],
    )  # fmt: skip
    assert "the hard link lib/b points at lib/missing, which is not a file before it" in (
        refusal(archive)
    )


def test_a_symlink_without_a_target_is_refused(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "sym", "1.0", files={"a": "a"}, raw_members=[("symlink", "lib/s", "")]
    )
    assert "sym-1.0-0.conda is damaged: the symlink lib/s has no target" in refusal(archive)


def test_a_listed_file_missing_from_the_archive_is_refused(tmp_path: Path) -> None:
    listing = paths_json(
        {"_path": "bin/app", "path_type": "hardlink", "size_in_bytes": 1},
        {"_path": "bin/spiffy", "path_type": "hardlink", "size_in_bytes": 5},
    )
    archive = write_conda_package(
        tmp_path, "spiffy-test-app", "0.5", files={"bin/app": "a"},
        extra_info={"paths.json": listing},
    )  # fmt: skip
    assert refusal(archive).startswith(
        "spiffy-test-app-0.5-0.conda is damaged: info/paths.json lists bin/spiffy, which the "
        "archive does not hold;"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"size_in_bytes": 99}, "share/x.txt holds 5 bytes, paths.json lists 99"),
        (
            {"size_in_bytes": 5, "sha256": "0" * 64},
            "share/x.txt does not match its sha256 in paths.json",
        ),
    ],
)
def test_a_listed_file_of_another_size_or_content_is_refused(
    tmp_path: Path, entry: dict[str, object], expected: str
) -> None:
    listing = paths_json({"_path": "share/x.txt", "path_type": "hardlink", **entry})
    archive = write_conda_package(
        tmp_path, "p", "1.0", files={"share/x.txt": "hello"}, extra_info={"paths.json": listing}
    )
    assert f"p-1.0-0.conda is damaged: {expected};" in refusal(archive)


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_a_truncated_archive_is_refused(tmp_path: Path, fmt: str) -> None:
    archive = write_conda_package(tmp_path, "cut", "1.0", files={"a": "x" * 5000}, fmt=fmt)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    message = refusal(archive)
    assert message.startswith(f"cut-1.0-0{fmt} is damaged: ")
    assert "unreadable" in message


def test_names_are_shown_escaped_never_raw(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "odd", "1.0", files={"a": "a"},
        raw_members=[("hardlink", "lib/\x1b[31mred\x07", "")],
    )  # fmt: skip
    message = refusal(archive)
    assert "lib/\\x1b[31mred\\x07" in message
    assert message.isprintable()


def test_a_valid_archive_passes_once_and_is_remembered(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "ok", "1.0", files={"bin/tool": "#!/bin/sh\n", "lib/x": "x"},
        symlinks={"lib/y": "x"}, raw_members=[("hardlink", "lib/z", "lib/x")],
    )  # fmt: skip
    validate_archive(archive)
    assert (archive.parent / f".{archive.name}.checked-1").exists()


def test_zip64_extra_fields_are_accepted(tmp_path: Path) -> None:
    archive = rezip_with_zip64_extras(
        write_conda_package(tmp_path, "foobar", "0.1.0", files={"share/foobar.txt": "foo"})
    )

    async def stream() -> None:
        async for _ in (await PackageArchive.from_path(archive)).stream("pkg"):
            pass

    with pytest.raises(Exception, match="zip64 extended information field"):
        asyncio.run(stream())  # what the builder used to read archives with
    validate_archive(archive)


@pytest.mark.e2e
def test_a_package_with_zip64_extra_fields_builds_and_installs(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    rezip_with_zip64_extras(
        write_conda_package(channel, "foobar", "0.1.0", files={"share/foobar.txt": "foo"})
    )
    index_channel(channel)
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM)
        lock = write_pixi_lock(
            tmp_path / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url
        )
        run = run_lockship(
            "build", lock, "--stub", frozen_stub, "--cache-dir", tmp_path / "cache",
            "-o", tmp_path / "out",
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    installer = Path(run.stdout.strip().splitlines()[-1])
    prefix = tmp_path / "env"
    result = run_installer(installer, "-b", "-p", prefix)
    assert result.returncode == 0, result.stderr
    assert (prefix / "share" / "foobar.txt").read_text() == "foo"
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.returncode == 0


def test_a_damaged_archive_fails_the_build_in_one_line(tmp_path: Path, demo_channel: Path) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(
        channel, "zlib", "1.2.11", files={"lib/libz.so": "z"},
        raw_members=[("hardlink", "lib/libz.so.1", "")],
    )  # fmt: skip
    index_channel(channel)
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM)
        lock = write_pixi_lock(
            tmp_path / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url
        )
        run = run_lockship(
            "build", lock, "--stub", stub, "--cache-dir", tmp_path / "cache",
            "-o", tmp_path / "out",
        )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.error_lines[0].startswith(
        "ERROR: zlib-1.2.11-0.conda is damaged: the hard link lib/libz.so.1 has no target;"
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_old_package_listing_a_missing_file_in_info_files_is_refused(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "old", "1.0", files={"a": "a"}, fmt=".tar.bz2",
        extra_info={"files": "a\nb/missing\n"},
    )  # fmt: skip
    # an old package: no paths.json, only info/files
    with tarfile.open(archive) as source:
        kept = [
            (m, source.extractfile(m) if m.isfile() else None)
            for m in source.getmembers()
            if m.name != "info/paths.json"
        ]
        blobs = [(m, f.read() if f is not None else None) for m, f in kept]
    with tarfile.open(archive, "w:bz2") as out:
        for member, data in blobs:
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    assert "info/files lists b/missing, which the archive does not hold" in refusal(archive)
