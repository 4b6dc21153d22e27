"""`lockship build` from the outside: outputs, caching, and each error's message and exit code."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import rattler
from lockship.builder.stubs.portable import portable_supported
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import read_payload

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

PLATFORM = DEMO_PLATFORM
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def stand_in_stub(tmp_path: Path) -> Path:
    """Not a real program: enough for tests that only look at the built file."""
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    return stub


def build(*args: str | Path, stub: Path, cache: Path, out: Path) -> tuple[int, str, str]:
    result = run_lockship("build", *args, "--stub", stub, "--cache-dir", cache, "-o", out)
    return result.returncode, result.stdout, result.stderr


def one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def test_build_writes_named_installer_with_every_package(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path, demo_records: list[rattler.RepoDataRecord]
) -> None:
    code, stdout, stderr = build(demo_lock, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path)
    assert code == 0, stderr
    installer = Path(stdout.strip().splitlines()[-1])
    assert installer == tmp_path / f"lsdemo-1.2.3-{PLATFORM}.sh"
    assert os.access(installer, os.X_OK)
    assert installer.read_bytes().startswith(b"#!/bin/sh\n")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    manifest = Manifest.from_dict(read_payload(installer).metadata)
    assert (manifest.name, manifest.version, manifest.platform) == ("lsdemo", "1.2.3", PLATFORM)
    assert sorted(p.name for p in manifest.packages) == sorted(
        r.name.normalized for r in demo_records
    )
    assert manifest.max_prefix_length is not None and manifest.max_prefix_length >= 200
    assert all(p.url.startswith("http://127.0.0.1:") for p in manifest.packages)


def test_name_version_options_and_lockfile_path(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    code, stdout, stderr = build(
        demo_lock / "pixi.lock",
        "--name",
        "prod",
        "--version",
        "9.9",
        stub=stand_in_stub,
        cache=tmp_path / "c",
        out=tmp_path,
    )
    assert code == 0, stderr
    assert stdout.strip().endswith(f"prod-9.9-{PLATFORM}.sh")


def test_default_name_is_the_environment_without_workspace(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    lock = tmp_path / "bare" / "pixi.lock"
    lock.parent.mkdir()
    lock.write_bytes((demo_lock / "pixi.lock").read_bytes())
    code, stdout, stderr = build(lock, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path)
    assert code == 0, stderr
    assert stdout.strip().endswith(f"default-0.0.0-{PLATFORM}.sh")


def test_warm_cache_downloads_nothing(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        cache = tmp_path / "cache"
        for attempt in (1, 2):
            before = len(server.requests)
            code, _, stderr = build(tmp_path, stub=stand_in_stub, cache=cache, out=tmp_path / "o")
            assert code == 0, stderr
            fetched = [r.path for r in server.requests[before:] if r.path.endswith(".conda")]
            if attempt == 1:
                assert len(fetched) == len(records)
                assert f"{len(records)} downloaded, 0 from cache" in stderr
            else:
                assert fetched == []
                assert f"0 downloaded, {len(records)} from cache" in stderr


def test_missing_lockfile(tmp_path: Path, stand_in_stub: Path) -> None:
    code, _, stderr = build(
        tmp_path / "nope.lock", stub=stand_in_stub, cache=tmp_path, out=tmp_path
    )
    assert code == 1
    assert "the lockfile" in one_error(stderr) and "does not exist" in stderr
    code, _, stderr = build(tmp_path, stub=stand_in_stub, cache=tmp_path, out=tmp_path)
    assert code == 1
    assert f"no pixi.lock in {tmp_path}" in one_error(stderr)


@pytest.mark.parametrize(
    "content",
    [
        "{ this is: [not yaml",
        "just: a yaml mapping\n",
        "version: 99\nenvironments: {}\npackages: []\n",
        "\x00\x01binary",
    ],
    ids=["not-yaml", "not-a-lock", "newer-version", "binary"],
)
def test_unreadable_lockfile(tmp_path: Path, stand_in_stub: Path, content: str) -> None:
    lock = tmp_path / "pixi.lock"
    lock.write_text(content)
    code, _, stderr = build(lock, stub=stand_in_stub, cache=tmp_path, out=tmp_path / "o")
    assert code == 1
    assert one_error(stderr).startswith(f"ERROR: cannot read the lockfile {lock}:")
    assert not (tmp_path / "o").exists()


def test_unknown_environment_lists_the_available_ones(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    code, _, stderr = build(
        demo_lock, "-e", "prod", stub=stand_in_stub, cache=tmp_path, out=tmp_path
    )
    assert code == 1
    assert "has no environment 'prod'; it has: default" in one_error(stderr)


def test_unlocked_platform_lists_the_locked_ones(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    code, _, stderr = build(
        demo_lock, "-p", "osx-arm64", stub=stand_in_stub, cache=tmp_path, out=tmp_path
    )
    assert code == 1
    assert f"is not locked for osx-arm64; it is locked for: {PLATFORM}" in one_error(stderr)


def test_pypi_sdists_are_fetched_to_be_built(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    text = (demo_lock / "pixi.lock").read_text()
    lock = tmp_path / "pixi.lock"
    # Add a PyPI package to the environment the way pixi writes it.
    text = text.replace(
        f"      {PLATFORM}:\n",
        f"      {PLATFORM}:\n      - pypi: https://example.invalid/six-1.16.0.tar.gz\n",
        1,
    )
    text += (
        "- pypi: https://example.invalid/six-1.16.0.tar.gz\n"
        "  name: six\n  version: 1.16.0\n"
        "  sha256: 8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
    )
    lock.write_text(text)
    code, _, stderr = build(lock, stub=stand_in_stub, cache=tmp_path, out=tmp_path / "o")
    assert code == 1, stderr
    line = one_error(stderr)
    assert "downloading https://example.invalid/six-1.16.0.tar.gz failed" in line
    code, _, stderr = build(
        lock, "--ignore-pypi-non-wheel", stub=stand_in_stub, cache=tmp_path, out=tmp_path / "o"
    )
    assert code == 0, stderr
    assert "leaving out PyPI packages that are not wheels" in stderr


def test_download_failure_names_the_url(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        victim = records[0]
        server.status_overrides[f"{victim.subdir}/{victim.file_name}"] = 404
        code, _, stderr = build(
            tmp_path, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path / "o"
        )
    assert code == 1
    line = one_error(stderr)
    assert f"downloading {victim.url} failed" in line and "404" in line
    assert not list((tmp_path / "o").glob("*.sh")) if (tmp_path / "o").exists() else True


def test_sha256_mismatch_names_package_expected_and_actual(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        victim = records[0]
        path = f"{victim.subdir}/{victim.file_name}"
        original = (demo_channel / path).read_bytes()
        server.content_overrides[path] = original[:-1] + bytes([original[-1] ^ 1])
        code, _, stderr = build(
            tmp_path, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path / "o"
        )
    assert code == 1
    line = one_error(stderr)
    expected = victim.sha256.hex()
    assert f"{victim.file_name} does not match the lockfile" in line
    assert f"expected {expected}" in line
    # nothing unverified entered the cache
    assert not list((tmp_path / "c").rglob(victim.file_name))


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run_lockship("build", "--no-such-option")
    assert result.returncode == 2
    assert one_error(result.stderr) == (
        "ERROR: unrecognized arguments: --no-such-option (see lockship build --help)"
    )
    result = run_lockship("build", "--concurrency", "many")
    assert result.returncode == 2
    assert one_error(result.stderr).endswith("(see lockship build --help)")
    result = run_lockship("frobnicate")
    assert result.returncode == 2


def test_read_only_output_dir_leaves_no_installer(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root ignores permissions: a read-only mount is read-only for root too
        mounted = not subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", out], capture_output=True
        ).returncode
        if not mounted:
            pytest.skip("running as root and cannot mount a read-only tmpfs here")
    else:
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, _, stderr = build(demo_lock, stub=stand_in_stub, cache=tmp_path / "c", out=out)
        assert code == 1
        assert f"cannot write the installer {out}" in one_error(stderr)
        assert list(out.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", out], check=False)


def test_damaged_cache_entry_fails_the_build_and_leaves_no_installer(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    """Cached archives are trusted by name but re-checked in the writing pass."""
    cache, out = tmp_path / "c", tmp_path / "o"
    code, stdout, stderr = build(demo_lock, stub=stand_in_stub, cache=cache, out=out)
    assert code == 0, stderr
    installer = Path(stdout.strip().splitlines()[-1])
    sbom = installer.with_name(f"{installer.stem}.cdx.json")
    sums = (out / "SHA256SUMS").read_text()
    listed = subprocess.run(
        ["sha256sum", sbom.name, installer.name],
        cwd=out,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sums == listed
    installer.unlink()
    sbom.unlink()
    archive = sorted((cache / "pkgs").glob("*/*.conda"))[0]
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    code, _, stderr = build(demo_lock, stub=stand_in_stub, cache=cache, out=out)
    assert code == 1
    error = one_error(stderr)
    assert str(archive) in error and "delete it and build again" in error
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS"]


def test_stub_changed_after_freezing_is_refused(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    sidecar = stand_in_stub.with_name(stand_in_stub.name + ".json")
    size = stand_in_stub.stat().st_size
    facts = {"platform": PLATFORM, "python": "3.11", "pyinstaller": "6", "stub": "0"}
    sidecar.write_text(json.dumps({**facts, "size": size, "sha256": "0" * 64, "glibc": None}))
    code, _, stderr = build(demo_lock, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path / "o")
    assert code == 1
    line = one_error(stderr)
    assert "does not match the sha256 in its sidecar" in line
    assert "freeze the stub again (lockship freeze-stub -o PATH)" in line
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.sh"))


def test_teardown_cannot_change_the_exit_code(tmp_path: Path, demo_lock: Path) -> None:
    """rattler's runtime threads crashed the interpreter's teardown about one exit in ten under
    load (a segfault instead of exit 1); the entry point ends the process itself, so even an
    aborting teardown leaves the exit code the error line promised."""
    wrong = write_conda_package(
        tmp_path / "mine", "wrong-platform", "0.1", subdir="win-64", files={"x": "x"}
    )
    argv = ["lockship", "build", str(demo_lock), "--inject", str(wrong), "-o", str(tmp_path)]
    program = (
        "import atexit, os, sys\n"
        f"sys.argv = {argv!r}\n"
        "atexit.register(os.abort)  # stands in for a crash while the interpreter shuts down\n"
        "from lockship.builder.cli import entry\n"
        "entry()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert run.returncode == 1, run.stderr
    assert "is built for win-64" in one_error(run.stderr)


def test_a_failure_on_a_later_platform_leaves_no_installer(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    """All or nothing: the first platform's installer is complete when the second fails, and
    still none is left under its final name, nor a SHA256SUMS line for it."""
    other = "osx-arm64"
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    mac = write_conda_package(channel, "mac-only", "1.0", subdir=other, files={"m.txt": "m"})
    index_channel(channel)
    out = tmp_path / "out"
    out.mkdir()
    (out / "SHA256SUMS").write_text(f"{'0' * 64}  kept-0.1-{PLATFORM}.sh\n")
    with ChannelServer(channel) as server:
        records = {
            PLATFORM: channel_records(channel, server.url, PLATFORM),
            other: channel_records(channel, server.url, other, ["mac-only"]),
        }
        write_pixi_lock(tmp_path / "pixi.lock", records, channel_url=server.url)
        server.content_overrides[f"{other}/{mac.name}"] = b"not the locked archive"
        run = run_lockship(
            "build",
            tmp_path,
            "-p",
            PLATFORM,
            "-p",
            other,
            "--stub",
            f"{PLATFORM}={stand_in_stub}",
            "--stub",
            f"{other}={stand_in_stub}",
            "--cache-dir",
            tmp_path / "cache",
            "-o",
            out,
        )
    assert run.returncode == 1, run.stderr
    assert f"{mac.name} does not match the lockfile" in one_error(run.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS"]
    assert (out / "SHA256SUMS").read_text() == f"{'0' * 64}  kept-0.1-{PLATFORM}.sh\n"


def test_errors_name_a_freeze_command_pip_users_have(
    tmp_path: Path, demo_lock: Path, stand_in_stub: Path
) -> None:
    sidecar = stand_in_stub.with_name(stand_in_stub.name + ".json")
    size = stand_in_stub.stat().st_size
    facts = {"platform": PLATFORM, "python": "3.11", "pyinstaller": "6", "stub": "0"}
    sidecar.write_text(json.dumps({**facts, "size": size + 1, "sha256": "0" * 64, "glibc": None}))
    code, _, stderr = build(demo_lock, stub=stand_in_stub, cache=tmp_path / "c", out=tmp_path / "o")
    assert code == 1
    line = one_error(stderr)
    assert "describes another binary" in line and "(lockship freeze-stub -o PATH)" in line
    help_run = run_lockship("freeze-stub", "--help")
    assert help_run.returncode == 0, help_run.stderr
    assert "-o PATH, --output PATH" in help_run.stdout


def test_link_scripts_allow_list(tmp_path: Path, demo_channel: Path, stand_in_stub: Path) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    for name in ("allowed-script", "other-script"):
        write_conda_package(
            channel, name, "1.0", files={f"bin/.{name}-post-link.sh": "echo linked\n"}
        )
    # rattler runs a pre-unlink script when an update removes the package: covered alike
    write_conda_package(
        channel, "unlink-script", "1.0", files={"bin/.unlink-script-pre-unlink.sh": "echo bye\n"}
    )
    index_channel(channel)
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        common = {"stub": stand_in_stub, "cache": tmp_path / "cache"}
        refused = build(
            tmp_path, "--link-scripts", "allow=allowed-script", out=tmp_path / "o1", **common
        )
        allowed = build(
            tmp_path,
            "--link-scripts",
            "allow=allowed-script,other-script,unlink-script",
            out=tmp_path / "o2",
            **common,
        )
    assert refused[0] == 1
    assert one_error(refused[2]).startswith(
        "ERROR: link scripts not allowed by --link-scripts allow=: other-script "
        "(bin/.other-script-post-link.sh), unlink-script (bin/.unlink-script-pre-unlink.sh); "
        "add the packages to the list, or build with --no-link-scripts (details: "
    )
    assert not list((tmp_path / "o1").glob("*.sh"))
    assert allowed[0] == 0, allowed[2]
    manifest = Manifest.from_dict(read_payload(Path(allowed[1].split()[-1])).metadata)
    assert manifest.options.link_script_packages == (
        "allowed-script", "other-script", "unlink-script",
    )  # fmt: skip


@pytest.mark.e2e
def test_two_builds_from_empty_caches_are_byte_identical(tmp_path: Path, demo_lock: Path) -> None:
    """Same lock, two empty caches: each build downloads everything and freezes its own stub,
    and the two installers are the same bytes."""
    built = []
    for name in ("one", "two"):
        result = run_lockship(
            "build", demo_lock, "--cache-dir", tmp_path / name / "cache", "-o", tmp_path / name
        )
        assert result.returncode == 0, result.stderr
        # on Linux the portable stub (its Python is made once per machine, outside --cache-dir)
        froze = "making the portable" if portable_supported(PLATFORM) else "Freezing the installer"
        assert froze in result.stderr
        built.append(Path(result.stdout.strip().splitlines()[-1]))
    assert built[0].read_bytes() == built[1].read_bytes()
