"""Fast, real checks of the fixture layer: demo channel, HTTP server, solving, lock, installs."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest
import rattler

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    DEMO_RECIPES,
    ChannelServer,
    archive_members,
    channel_records,
    demo_recipe_order,
    index_channel,
    package_info,
    write_conda_package,
)

DEMO_NAMES = {"python", "lsdemo-hello", "lsdemo-config", "lsdemo-greet"}


def _install(records: list[rattler.RepoDataRecord], prefix: Path, cache: Path) -> None:
    asyncio.run(rattler.install(records, prefix, cache_dir=cache, show_progress=False))


def _run(exe: Path) -> str:
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=30).stdout


def _archives(channel: Path) -> dict[str, Path]:
    found = [*channel.glob("*/*.conda"), *channel.glob("*/*.tar.bz2")]
    return {package_info(p)["index"]["name"]: p for p in found}


def test_recipe_order_builds_dependencies_first() -> None:
    order = [d.name for d in demo_recipe_order(DEMO_RECIPES)]
    assert set(order) == DEMO_NAMES
    assert order.index("python") < order.index("lsdemo-greet")
    assert order.index("lsdemo-config") < order.index("lsdemo-hello")


def test_demo_channel_archives(demo_channel: Path) -> None:
    assert (demo_channel / "noarch" / "repodata.json").is_file()
    assert (demo_channel / DEMO_PLATFORM / "repodata.json").is_file()
    archives = _archives(demo_channel)
    assert set(archives) == DEMO_NAMES
    for path in archives.values():
        assert path.stat().st_mode & 0o777 == 0o644

    hello = package_info(archives["lsdemo-hello"])
    assert hello["index"]["subdir"] == DEMO_PLATFORM
    assert hello["index"]["depends"] == ["lsdemo-config >=2"]
    exe = hello["paths"]["bin/lsdemo-hello"]
    assert exe["file_mode"] == "binary"
    assert len(exe["prefix_placeholder"]) == 255
    assert hello["paths"]["bin/lsdemo-hi"]["path_type"] == "softlink"
    link = archive_members(archives["lsdemo-hello"])["bin/lsdemo-hi"][0]
    assert link.issym() and link.linkname == "lsdemo-hello"

    config = package_info(archives["lsdemo-config"])
    assert config["index"]["noarch"] == "generic"
    assert config["paths"]["bin/lsdemo-where"]["file_mode"] == "text"
    assert config["paths"]["etc/lsdemo/config.ini"]["file_mode"] == "text"
    assert "etc/conda/activate.d/lsdemo.sh" in config["paths"]

    python = package_info(archives["python"])
    assert python["index"]["version"] == "3.11.0"
    assert python["paths"]["bin/python3.11"]["file_mode"] == "text"
    assert "lib/python3.11/site-packages/.keep" in python["paths"]

    greet = package_info(archives["lsdemo-greet"])
    assert greet["index"]["noarch"] == "python"
    assert "site-packages/lsdemo_greet/__init__.py" in greet["paths"]
    assert greet["link"]["noarch"]["entry_points"] == ["lsdemo-greet = lsdemo_greet:main"]


def test_demo_records_point_at_http_server(
    demo_records: list[rattler.RepoDataRecord], channel_server: ChannelServer
) -> None:
    assert {r.name.normalized for r in demo_records} == DEMO_NAMES
    for record in demo_records:
        assert record.url.startswith(channel_server.url + "/")
        assert record.sha256 is not None and len(record.sha256) == 32
    names = [r.name.normalized for r in demo_records]
    assert names.index("python") < names.index("lsdemo-greet")  # dependencies first


def test_install_demo_records_over_http(
    demo_records: list[rattler.RepoDataRecord], channel_server: ChannelServer, tmp_path: Path
) -> None:
    prefix = tmp_path / "env"
    _install(demo_records, prefix, tmp_path / "cache")
    bin_dir = prefix / "bin"
    assert _run(bin_dir / "lsdemo-hello") == f"lsdemo-hello from {prefix}\n"
    assert (bin_dir / "lsdemo-hi").is_symlink()
    assert (bin_dir / "lsdemo-hi").readlink() == Path("lsdemo-hello")
    assert _run(bin_dir / "lsdemo-hi") == f"lsdemo-hello from {prefix}\n"
    assert _run(bin_dir / "lsdemo-where") == f"prefix={prefix}\n"
    assert _run(bin_dir / "lsdemo-greet") == "greetings from lsdemo_greet\n"
    activate = prefix / "etc" / "conda" / "activate.d" / "lsdemo.sh"
    assert "LSDEMO_ACTIVATED=yes" in activate.read_text()
    assert f"prefix = {prefix}\n" in (prefix / "etc" / "lsdemo" / "config.ini").read_text()
    assert (prefix / "lib" / "python3.11" / "site-packages" / "lsdemo_greet").is_dir()
    fetched = {r.path for r in channel_server.requests if r.path.endswith(".conda")}
    assert {Path(r.url).name for r in demo_records} <= {Path(p).name for p in fetched}


def test_demo_lock_roundtrip(demo_lock: Path, demo_records: list[rattler.RepoDataRecord]) -> None:
    toml = (demo_lock / "pixi.toml").read_text()
    assert 'name = "lsdemo"' in toml and 'version = "1.2.3"' in toml
    lock = rattler.LockFile.from_path(demo_lock / "pixi.lock")
    env = lock.environment("default")
    assert env is not None
    platform = next(p for p in lock.platforms() if p.name == DEMO_PLATFORM)
    records = env.conda_repodata_records_for_platform(platform) or []
    assert sorted((r.url, r.sha256) for r in records) == sorted(
        (r.url, r.sha256) for r in demo_records
    )


@pytest.mark.skipif(sys.platform == "win32", reason="runs a #!/bin/sh script through a symlink")
def test_handwritten_archives_install(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    placeholder = "/opt/lockship_placeholder_" + "p" * 60
    conda = write_conda_package(
        channel,
        "handmade",
        "1.0",
        files={
            "bin/handmade": f"#!/bin/sh\necho handmade at {placeholder}\n",
            "share/handmade/blob.bin": b"\x00\x01\x02",
        },
        symlinks={"bin/hm": "handmade"},
        text_placeholders={"bin/handmade": placeholder},
    )
    bz2 = write_conda_package(
        channel,
        "oldstyle",
        "0.1",
        build="h0_1",
        build_number=1,
        subdir=DEMO_PLATFORM,  # installed and run on this machine
        fmt=".tar.bz2",
        files={"share/oldstyle.txt": "old"},
        depends=["handmade 1.*"],
    )
    assert conda.name == "handmade-1.0-0.conda"
    assert bz2.name == "oldstyle-0.1-h0_1.tar.bz2"
    info = package_info(conda)
    assert info["paths"]["bin/handmade"]["prefix_placeholder"] == placeholder
    assert info["paths"]["bin/handmade"]["file_mode"] == "text"
    index_channel(channel)

    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM, ["oldstyle"])
        assert [r.name.normalized for r in records] == ["handmade", "oldstyle"]
        prefix = tmp_path / "env"
        _install(records, prefix, tmp_path / "cache")
    assert _run(prefix / "bin" / "hm") == f"handmade at {prefix}\n"
    assert (prefix / "share" / "handmade" / "blob.bin").read_bytes() == b"\x00\x01\x02"
    assert (prefix / "share" / "oldstyle.txt").read_text() == "old"


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_raw_members_are_written_verbatim(tmp_path: Path, fmt: str) -> None:
    archive = write_conda_package(
        tmp_path,
        "evil",
        "1",
        fmt=fmt,
        files={"ok.txt": "ok"},
        raw_members=[
            ("file", "../escape.txt", "escaped"),
            ("file", "/tmp/lockship-abs.txt", "abs"),
            ("symlink", "lib/evil", "/tmp/outside"),
            ("file", "lib/evil/pwned.txt", "gotcha", "listed"),
            ("dir", "share/empty"),
            ("hardlink", "share/ok-again.txt", "ok.txt"),
        ],
    )
    members = archive_members(archive)
    names = list(members)
    assert names.index("lib/evil") < names.index("lib/evil/pwned.txt")
    assert members["../escape.txt"][1] == b"escaped"
    assert members["/tmp/lockship-abs.txt"][1] == b"abs"
    assert members["lib/evil"][0].issym() and members["lib/evil"][0].linkname == "/tmp/outside"
    assert members["share/empty"][0].isdir()
    assert members["share/ok-again.txt"][0].type == tarfile.LNKTYPE
    paths = package_info(archive)["paths"]
    assert set(paths) == {"ok.txt", "lib/evil/pwned.txt"}  # only "listed" raw members


def test_raw_member_in_info_tar(tmp_path: Path) -> None:
    archive = write_conda_package(
        tmp_path, "evil-info", "1", raw_members=[("file", "../info-escape.txt", "x", "info")]
    )
    members = archive_members(archive)
    assert "../info-escape.txt" in members
    assert set(package_info(archive)["paths"]) == set()


def _get(url: str, *, timeout: float = 5, auth: str | None = None) -> bytes:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", auth)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def _status(url: str, *, auth: str | None = None) -> int:
    try:
        _get(url, auth=auth)
    except HTTPError as err:
        err.close()
        return err.code
    return 200


def test_channel_server_fault_hooks(tmp_path: Path) -> None:
    (tmp_path / "noarch").mkdir()
    payload = bytes(range(256)) * 40
    (tmp_path / "noarch" / "blob.bin").write_bytes(payload)
    (tmp_path / "noarch" / "repodata.json").write_text(json.dumps({"packages": {}}))
    with ChannelServer(tmp_path) as server:
        blob = server.url_for("noarch/blob.bin")
        assert not server.url.endswith("/")
        assert _get(blob) == payload

        server.status_overrides["noarch/blob.bin"] = 404
        assert _status(blob) == 404
        server.status_overrides.clear()

        server.fail_first_n["/noarch/blob.bin"] = 2
        assert [_status(blob) for _ in range(3)] == [503, 503, 200]

        server.truncate["noarch/blob.bin"] = 100
        with pytest.raises(http.client.IncompleteRead):
            _get(blob)
        server.truncate.clear()

        server.content_overrides["noarch/repodata.json"] = b"not json"
        assert _get(server.url_for("noarch/repodata.json")) == b"not json"

        server.hang["noarch/blob.bin"] = 30
        with pytest.raises((TimeoutError, URLError)):
            _get(blob, timeout=0.3)
        server.hang.clear()

        server.auth = ("user", "s3cret")
        assert _status(blob) == 401
        assert _status(blob, auth="Basic dXNlcjp3cm9uZw==") == 401
        assert _get(blob, auth="Basic dXNlcjpzM2NyZXQ=") == payload
        assert server.requests[-1].headers["Authorization"] == "Basic dXNlcjpzM2NyZXQ="

        assert server.request_count("noarch/blob.bin") >= 10
        server.reset_faults()
        assert server.request_count() == 0
        assert _get(blob) == payload
