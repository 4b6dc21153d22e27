"""Where stubs come from: explicit, a stub folder, the cache, or a verified download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from lockship import stub
from lockship.builder.errors import StubError
from lockship.builder.network import NetworkOptions, make_client
from lockship.builder.settings import Settings
from lockship.builder.stubs.facts import StubFacts, cached_stub_path, facts_path
from lockship.builder.stubs.lookup import MANIFEST_NAME, find_stubs

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
)
from tests.runners import run_lockship

#: never this machine, so never frozen here
PLATFORM = "osx-64" if DEMO_PLATFORM == "osx-arm64" else "osx-arm64"
CLIENT = make_client(NetworkOptions(), timeout=10)
RETRIES = Settings().retries


def sidecar_for(data: bytes, platform: str = PLATFORM) -> str:
    facts = StubFacts(
        platform=platform,
        glibc=None,
        python="3.11.0",
        pyinstaller="6.0",
        stub="0-test",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return json.dumps(facts.to_json())


def publish(
    root: Path, stubs: dict[str, bytes], *, manifest: dict[str, bytes] | None = None
) -> Path:
    release = root / f"v{stub.__version__}"
    release.mkdir(parents=True)
    lines = []
    for name, data in stubs.items():
        (release / name).write_bytes(data)
        platform = name.removeprefix("lockship-stub-").removesuffix(".exe")
        sidecar = sidecar_for((manifest or stubs)[name], platform)
        (release / f"{name}.json").write_text(sidecar)
        digest = hashlib.sha256((manifest or stubs)[name]).hexdigest()
        lines.append(f"{digest}  {name}\n")
        lines.append(f"{hashlib.sha256(sidecar.encode()).hexdigest()}  {name}.json\n")
    (release / MANIFEST_NAME).write_text("".join(lines))
    return root


def test_download_is_verified_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"\xcf\xfa\xed\xfe stand-in mac stub"
    root = publish(tmp_path / "releases", {f"lockship-stub-{PLATFORM}": data})
    with ChannelServer(root) as server:
        monkeypatch.setenv("LOCKSHIP_STUB_URL", server.url)
        found = find_stubs([PLATFORM], tmp_path / "cache", client=CLIENT, retries=RETRIES)
        assert found[PLATFORM] == cached_stub_path(tmp_path / "cache", PLATFORM)
        assert found[PLATFORM].read_bytes() == data
        requests = len(server.requests)
        # from the cache now
        assert find_stubs([PLATFORM], tmp_path / "cache", client=CLIENT, retries=RETRIES) == found
        assert len(server.requests) == requests


def test_tampered_download_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lockship-stub-{PLATFORM}"
    root = publish(tmp_path / "r", {name: b"evil"}, manifest={name: b"the real stub"})
    with ChannelServer(root) as server:
        monkeypatch.setenv("LOCKSHIP_STUB_URL", server.url)
        with pytest.raises(StubError, match=f"the downloaded {name} has sha256"):
            find_stubs([PLATFORM], tmp_path / "cache", client=CLIENT, retries=RETRIES)
    assert not cached_stub_path(tmp_path / "cache", PLATFORM).exists()


def test_a_tampered_sidecar_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lockship-stub-{PLATFORM}"
    root = publish(tmp_path / "r", {name: b"the real stub"})
    sidecar = root / f"v{stub.__version__}" / f"{name}.json"
    sidecar.write_text(sidecar.read_text().replace('"glibc": null', '"glibc": "2.99"'))
    with ChannelServer(root) as server:
        monkeypatch.setenv("LOCKSHIP_STUB_URL", server.url)
        with pytest.raises(StubError, match=f"the downloaded {name}.json has sha256"):
            find_stubs([PLATFORM], tmp_path / "cache", client=CLIENT, retries=RETRIES)
    cached = cached_stub_path(tmp_path / "cache", PLATFORM)
    assert not cached.exists() and not facts_path(cached).exists()


def test_order_explicit_then_folder_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCKSHIP_STUB_DIR", raising=False)
    explicit = tmp_path / "explicit"
    explicit.write_bytes(b"e")
    folder = tmp_path / "stubs"
    folder.mkdir()
    (folder / f"lockship-stub-{PLATFORM}").write_bytes(b"f")
    (folder / "lockship-stub-win-64.exe").write_bytes(b"w")
    cached = cached_stub_path(tmp_path / "cache", "linux-aarch64")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"c")
    facts_path(cached).write_text(sidecar_for(b"c", "linux-aarch64"))
    found = find_stubs(
        [PLATFORM, "win-64", "linux-aarch64"],
        tmp_path / "cache",
        client=CLIENT,
        retries=RETRIES,
        explicit={PLATFORM: explicit},
        stub_dir=folder,
    )
    assert found == {
        PLATFORM: explicit,
        "win-64": folder / "lockship-stub-win-64.exe",
        "linux-aarch64": cached,
    }
    monkeypatch.setenv("LOCKSHIP_STUB_DIR", str(folder))
    found = find_stubs([PLATFORM], tmp_path / "cache", client=CLIENT, retries=RETRIES)
    assert found[PLATFORM] == folder / f"lockship-stub-{PLATFORM}"


def test_a_build_downloads_stubs_with_its_own_client(tmp_path: Path) -> None:
    """--mirror (like --timeout, --config and --auth-file) applies to stub downloads too."""
    root = tmp_path / "root"
    mac = write_conda_package(
        root / "channel", "mac-only", "1.0", subdir=PLATFORM, files={"m": "m"}
    )
    index_channel(root / "channel")
    data = write_stand_in_stub(tmp_path / "mac-stub", b"\xcf\xfa\xed\xfe mac unpacker").read_bytes()
    publish(root / "releases", {f"lockship-stub-{PLATFORM}": data})
    unreachable = "http://127.0.0.1:9/releases"  # nothing listens there
    with ChannelServer(root) as server:
        records = channel_records(root / "channel", f"{server.url}/channel", PLATFORM, ["mac-only"])
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        run = run_lockship(
            "build",
            tmp_path,
            "-p",
            PLATFORM,
            "--mirror",
            f"{unreachable}={server.url}/releases",
            "--retries",
            "0",
            "--cache-dir",
            tmp_path / "cache",
            "-o",
            tmp_path / "out",
            env={"LOCKSHIP_STUB_URL": unreachable},
        )
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.split()[-1]).name == f"default-0.0.0-{PLATFORM}.sh"
    assert cached_stub_path(tmp_path / "cache", PLATFORM).read_bytes() == data
    assert mac.name in {r.file_name for r in records}
