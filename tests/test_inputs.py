"""Every input kind, the network options, and end-to-end installs built from each."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import rattler
import yaml
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
    write_wheel,
)
from tests.runners import Run, run_installer, run_lockship

PLATFORM = DEMO_PLATFORM
OTHER = "osx-arm64"  # the demo channel is Linux, so never this machine


def one_error(run: Run) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return run.error_lines[0]


def last_path(run: Run) -> Path:
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip().splitlines()[-1])


def manifest_of(installer: Path) -> Manifest:
    return Manifest.from_dict(read_payload(installer).metadata)


@pytest.fixture(scope="module")
def two_platform_channel(tmp_path_factory: pytest.TempPathFactory, demo_channel: Path) -> Path:
    """The demo channel plus an osx-arm64 package, so locks can cover two platforms."""
    channel = tmp_path_factory.mktemp("two-platform") / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(channel, "mac-only", "1.0", subdir=OTHER, files={"share/mac.txt": "m"})
    (channel / OTHER).mkdir(exist_ok=True)
    index_channel(channel)
    return channel


# --- conda-lock -----------------------------------------------------------------------------


def conda_lock_document(records: dict[str, list[rattler.RepoDataRecord]], dev: set[str]) -> str:
    packages = []
    for platform, recs in records.items():
        for r in recs:
            packages.append(
                {
                    "name": r.name.normalized,
                    "version": str(r.version),
                    "manager": "conda",
                    "platform": platform,
                    "dependencies": {},
                    "url": r.url,
                    "hash": {"md5": r.md5.hex() if r.md5 else "0" * 32, "sha256": r.sha256.hex()},
                    "category": "dev" if r.name.normalized in dev else "main",
                    "optional": r.name.normalized in dev,
                }
            )
    document = {
        "version": 1,
        "metadata": {
            "content_hash": {p: "x" for p in records},
            "channels": [{"url": "local", "used_env_vars": []}],
            "platforms": sorted(records),
            "sources": ["environment.yml"],
        },
        "package": packages,
    }
    return yaml.safe_dump(document, sort_keys=False)


def test_conda_lock_two_platforms_and_categories(
    tmp_path: Path, two_platform_channel: Path, frozen_stub: Path
) -> None:
    stand_in = write_stand_in_stub(tmp_path / "stand-in", b"stand-in stub")
    with ChannelServer(two_platform_channel) as server:
        records = {
            PLATFORM: channel_records(two_platform_channel, server.url, PLATFORM),
            OTHER: channel_records(two_platform_channel, server.url, OTHER, ["mac-only"]),
        }
        lock = tmp_path / "conda-lock.yml"
        lock.write_text(conda_lock_document(records, dev={"lsdemo-greet"}))
        common = ["--stub", f"{PLATFORM}={frozen_stub}", "--stub", f"{OTHER}={stand_in}"]
        common += ["--cache-dir", tmp_path / "cache"]
        run = run_lockship("build", lock, "--all-platforms", "-o", tmp_path / "main", *common)
        assert run.returncode == 0, run.stderr
        built = [Path(line) for line in run.stdout.split()]
        assert sorted(p.name for p in built) == [
            f"default-0.0.0-{PLATFORM}.sh",
            f"default-0.0.0-{OTHER}.sh",
        ]
        linux = manifest_of(built[0])
        assert "lsdemo-greet" not in {p.name for p in linux.packages}
        assert {p.name for p in manifest_of(built[1]).packages} == {"mac-only"}
        dev = run_lockship(
            "build",
            lock,
            "--category",
            "main",
            "--category",
            "dev",
            "-o",
            tmp_path / "dev",
            *common,
        )
        assert "lsdemo-greet" in {p.name for p in manifest_of(last_path(dev)).packages}
        bad = run_lockship("build", lock, "--category", "docs", "-o", tmp_path / "x", *common)
        assert "has no category docs; it has: dev, main" in one_error(bad)
    prefix = tmp_path / "env"
    assert run_installer(built[0], "-b", "-p", prefix).returncode == 0
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"
    sums = (tmp_path / "main" / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in sums) == sorted(
        [p.name for p in built] + [f"{p.stem}.cdx.json" for p in built]
    )
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((tmp_path / "main" / name).read_bytes()).hexdigest() == digest


# --- explicit files -------------------------------------------------------------------------


def explicit_file(records: list[rattler.RepoDataRecord], platform: str, *, md5: bool) -> str:
    lines = ["# This file may be used to create an environment using:", f"# platform: {platform}"]
    lines.append("@EXPLICIT")
    for r in records:
        lines.append(f"{r.url}#{r.md5.hex()}" if md5 and r.md5 else r.url)
    return "\n".join(lines) + "\n"


def test_explicit_files_for_two_platforms(
    tmp_path: Path, two_platform_channel: Path, frozen_stub: Path
) -> None:
    stand_in = write_stand_in_stub(tmp_path / "stand-in", b"stand-in stub")
    with ChannelServer(two_platform_channel) as server:
        linux = channel_records(two_platform_channel, server.url, PLATFORM)
        mac = channel_records(two_platform_channel, server.url, OTHER, ["mac-only"])
        (tmp_path / "linux.txt").write_text(explicit_file(linux, PLATFORM, md5=True))
        (tmp_path / "mac.txt").write_text(explicit_file(mac, OTHER, md5=False))
        out = tmp_path / "out"
        linux_run = run_lockship(
            "build",
            tmp_path / "linux.txt",
            "-o",
            out,
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
        mac_run = run_lockship(
            "build",
            tmp_path / "mac.txt",
            "-p",
            OTHER,
            "-o",
            out,
            "--stub",
            stand_in,
            "--cache-dir",
            tmp_path / "cache",
        )
        # a wrong md5 is caught
        bad = explicit_file(linux, PLATFORM, md5=True).replace(linux[0].md5.hex(), "0" * 32)
        (tmp_path / "bad.txt").write_text(bad)
        bad_run = run_lockship(
            "build",
            tmp_path / "bad.txt",
            "-o",
            tmp_path / "bad",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache2",
        )
    installer = last_path(linux_run)
    assert {p.name for p in manifest_of(installer).packages} == {r.name.normalized for r in linux}
    assert {p.name for p in manifest_of(last_path(mac_run)).packages} == {"mac-only"}
    assert f"{linux[0].file_name} does not match the lockfile" in one_error(bad_run)
    prefix = tmp_path / "env"
    assert run_installer(installer, "-b", "-p", prefix).returncode == 0
    assert (prefix / "bin" / "lsdemo-greet").exists()


# --- specs and environment.yml ---------------------------------------------------------------


def test_specs_are_solved_and_the_lock_is_kept(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    with ChannelServer(demo_channel) as server:
        run = run_lockship(
            "build",
            "--spec",
            "lsdemo-hello >=1",
            "--spec",
            "lsdemo-greet",
            "-c",
            server.url,
            "--name",
            "solved",
            "--version",
            "2.0",
            "-o",
            tmp_path,
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
    installer = last_path(run)
    lock = tmp_path / "solved-2.0.pixi.lock"
    assert lock.is_file()
    manifest = manifest_of(installer)
    assert manifest.options.solved_lock == "lockship/pixi.lock"
    names = {p.name for p in manifest.packages}
    assert {"lsdemo-hello", "lsdemo-config", "lsdemo-greet", "python"} <= names
    env = rattler.LockFile.from_path(lock).default_environment()
    assert env is not None
    locked = env.conda_repodata_records_for_platform(env.platforms()[0]) or []
    assert {r.name.normalized for r in locked} == names
    prefix = tmp_path / "env"
    assert run_installer(installer, "-b", "-p", prefix).returncode == 0
    greet = subprocess.run([prefix / "bin" / "lsdemo-greet"], capture_output=True, text=True)
    assert greet.stdout.strip() == "greetings from lsdemo_greet"


def test_environment_yml(tmp_path: Path, demo_channel: Path, frozen_stub: Path) -> None:
    with ChannelServer(demo_channel) as server:
        (tmp_path / "environment.yml").write_text(
            f"name: fromyml\nchannels:\n  - {server.url}\ndependencies:\n  - lsdemo-config\n"
        )
        run = run_lockship(
            "build",
            tmp_path / "environment.yml",
            "-o",
            tmp_path / "out",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
        installer = last_path(run)
        assert installer.name == f"fromyml-0.0.0-{PLATFORM}.sh"
        assert {p.name for p in manifest_of(installer).packages} == {"lsdemo-config"}
        missing = run_lockship(
            "build",
            "--spec",
            "no-such-package",
            "-c",
            server.url,
            "-o",
            tmp_path / "x",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
    assert f"cannot solve no-such-package for {PLATFORM}" in one_error(missing)


def test_a_failed_spec_build_leaves_no_solved_lock(tmp_path: Path, demo_channel: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "solved-2.0.pixi.lock").write_text("a lock of mine\n")
    with ChannelServer(demo_channel) as server:
        common = ["--spec", "lsdemo-hello", "-c", server.url, "--version", "2.0", "-o", out]
        common += ["--cache-dir", tmp_path / "cache"]
        # solved, then the build fails (no stub at that path)
        failed = run_lockship("build", *common, "--name", "solved", "--stub", tmp_path / "none")
        assert "ERROR: " in one_error(failed)
        assert (out / "solved-2.0.pixi.lock").read_text() == "a lock of mine\n"
        failed = run_lockship("build", *common, "--name", "other", "--stub", tmp_path / "none")
        one_error(failed)
    assert sorted(p.name for p in out.iterdir()) == ["solved-2.0.pixi.lock"]


# --- injected packages -----------------------------------------------------------------------


def test_inject(tmp_path: Path, demo_lock: Path, frozen_stub: Path, download_cache: Path) -> None:
    app = write_conda_package(
        tmp_path / "mine",
        "my-app",
        "0.1",
        depends=["lsdemo-config >=2"],
        files={"share/my-app/app.txt": "app"},
    )
    orphan = write_conda_package(
        tmp_path / "mine", "orphan", "0.1", depends=["not-locked >=1"], files={"x": "x"}
    )
    wrong = write_conda_package(
        tmp_path / "mine", "wrong-platform", "0.1", subdir="win-64", files={"x": "x"}
    )
    common = ["--stub", frozen_stub, "--cache-dir", download_cache]
    run = run_lockship("build", demo_lock, "--inject", app, "-o", tmp_path / "a", *common)
    installer = last_path(run)
    assert "my-app" in {p.name for p in manifest_of(installer).packages}
    line = one_error(
        run_lockship("build", demo_lock, "--inject", orphan, "-o", tmp_path / "b", *common)
    )
    assert f"depends on 'not-locked >=1', which no locked package for {PLATFORM} satisfies" in line
    line = one_error(
        run_lockship("build", demo_lock, "--inject", wrong, "-o", tmp_path / "c", *common)
    )
    assert f"is built for win-64, not {PLATFORM} or noarch" in line
    prefix = tmp_path / "env"
    assert run_installer(installer, "-b", "-p", prefix).returncode == 0
    assert (prefix / "share" / "my-app" / "app.txt").read_text() == "app"


# --- PyPI wheels ---------------------------------------------------------------------------


def test_pypi_wheels_from_server_and_relative_path(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    wheels = tmp_path / "wheels"
    served = write_wheel(
        wheels,
        "hello-wheel",
        "1.0",
        modules={"hello_wheel/__init__.py": "def main():\n    print('hello from a wheel')\n"},
        console_scripts={"hello-wheel": "hello_wheel:main"},
    )
    local = write_wheel(
        tmp_path / "ws" / "dist",
        "local-wheel",
        "2.0",
        modules={"local_wheel.py": "VALUE = 42\n"},
    )
    shutil.copytree(demo_channel, tmp_path / "channel")
    shutil.copy(served, tmp_path / "channel" / served.name)
    with ChannelServer(tmp_path / "channel") as server:
        records = channel_records(tmp_path / "channel", server.url, PLATFORM)
        lock = write_pixi_lock(
            tmp_path / "ws" / "pixi.lock", {PLATFORM: records}, channel_url=server.url
        )
        sha = hashlib.sha256(served.read_bytes()).hexdigest()
        add_pypi_packages(
            lock,
            PLATFORM,
            [
                ("hello-wheel", "1.0", f"{server.url}/{served.name}", sha),
                ("local-wheel", "2.0", f"./dist/{local.name}", None),
            ],
        )
        run = run_lockship(
            "build",
            lock,
            "-o",
            tmp_path / "out",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
        installer = last_path(run)
        # an sdist the server does not have: its download fails, or it is left out
        add_pypi_packages(
            lock, PLATFORM, [("an-sdist", "0.5", f"{server.url}/an-sdist-0.5.tar.gz", None)]
        )
        refused = run_lockship(
            "build",
            lock,
            "-o",
            tmp_path / "out2",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
        skipped = run_lockship(
            "build",
            lock,
            "--ignore-pypi-non-wheel",
            "-o",
            tmp_path / "out3",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
    assert f"downloading {server.url}/an-sdist-0.5.tar.gz failed" in one_error(refused)
    assert skipped.returncode == 0, skipped.stderr
    assert f"WARNING: leaving out PyPI packages that are not wheels ({PLATFORM}): an-sdist" in (
        skipped.stderr
    )
    info = json.loads(run_installer(installer, "--info", "--json").stdout)
    assert sorted(info["pypi_wheels"]) == sorted([f"pypi/{served.name}", f"pypi/{local.name}"])
    prefix = tmp_path / "env"
    result = run_installer(installer, "-b", "-p", prefix)
    assert result.returncode == 0, result.stderr
    script = prefix / "bin" / "hello-wheel"
    assert script.read_text().startswith(f"#!{prefix}/bin/python")
    out = subprocess.run([script], capture_output=True, text=True)
    assert out.stdout.strip() == "hello from a wheel", out.stderr
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert (site / "local_wheel.py").read_text() == "VALUE = 42\n"
    assert list((site / "hello_wheel" / "__pycache__").glob("*.pyc"))


# --- network -------------------------------------------------------------------------------


def test_basic_auth_through_an_auth_file(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    with ChannelServer(demo_channel) as open_server:
        records = channel_records(demo_channel, open_server.url, PLATFORM)
    with ChannelServer(demo_channel, auth=("lock", "s3cret")) as server:
        moved = [_moved(r, open_server.url, server.url) for r in records]
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: moved}, channel_url=server.url)
        common = ["--stub", frozen_stub, "--cache-dir", tmp_path / "cache", "--retries", "0"]
        denied = run_lockship("build", tmp_path, "-o", tmp_path / "o1", *common)
        host = "127.0.0.1"  # rattler keys credentials by host name, without the port
        auth = tmp_path / "auth.json"
        auth.write_text(
            json.dumps({host: {"BasicHTTP": {"username": "lock", "password": "s3cret"}}})
        )
        allowed = run_lockship(
            "build", tmp_path, "--auth-file", auth, "-o", tmp_path / "o2", *common
        )
    assert "401" in one_error(denied)
    assert last_path(allowed).is_file()


def _moved(record: rattler.RepoDataRecord, old: str, new: str) -> rattler.RepoDataRecord:
    record.url = record.url.replace(old, new)
    record.channel = new + "/"
    return record


def test_mirror_and_config_file(tmp_path: Path, demo_channel: Path, frozen_stub: Path) -> None:
    original = "http://127.0.0.1:9/conda-forge"  # nothing listens there
    with ChannelServer(demo_channel) as server:
        records = [
            _moved(r, server.url, original)
            for r in channel_records(demo_channel, server.url, PLATFORM)
        ]
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=original)
        common = ["--stub", frozen_stub, "--retries", "0"]
        direct = run_lockship(
            "build", tmp_path, "-o", tmp_path / "o0", "--cache-dir", tmp_path / "c0", *common
        )
        mirrored = run_lockship(
            "build",
            tmp_path,
            "--mirror",
            f"{original}={server.url}",
            "-o",
            tmp_path / "o1",
            "--cache-dir",
            tmp_path / "c1",
            *common,
        )
        config = tmp_path / "config.toml"
        config.write_text(f'[mirrors]\n"{original}" = ["{server.url}"]\n')
        configured = run_lockship(
            "build",
            tmp_path,
            "--config",
            config,
            "-o",
            tmp_path / "o2",
            "--cache-dir",
            tmp_path / "c2",
            *common,
        )
    assert f"downloading {original}/" in one_error(direct)
    for run in (mirrored, configured):
        manifest = manifest_of(last_path(run))
        assert all(p.url.startswith(original) for p in manifest.packages)  # recorded as locked


def test_flaky_server_is_retried(tmp_path: Path, demo_channel: Path, frozen_stub: Path) -> None:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        victim = f"{records[0].subdir}/{records[0].file_name}"
        server.fail_first_n[victim] = 1
        run = run_lockship(
            "build",
            tmp_path,
            "-o",
            tmp_path / "out",
            "--stub",
            frozen_stub,
            "--cache-dir",
            tmp_path / "cache",
        )
        assert server.request_count(victim) == 2
    assert last_path(run).is_file()


def test_dry_run(tmp_path: Path, demo_lock: Path, frozen_stub: Path) -> None:
    run = run_lockship(
        "build",
        demo_lock,
        "--dry-run",
        "--stub",
        frozen_stub,
        "-o",
        tmp_path / "out",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert run.returncode == 0, run.stderr
    assert f"platform:     {PLATFORM}" in run.stdout
    assert "0 from cache, 4 to download" in run.stdout
    assert "lsdemo-hello 1.0.0" in run.stdout
    assert not (tmp_path / "out").exists()
    assert (
        not list((tmp_path / "cache").rglob("*.conda")) if (tmp_path / "cache").exists() else True
    )


def test_missing_stub_for_a_platform_writes_nothing(
    tmp_path: Path, two_platform_channel: Path, frozen_stub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ChannelServer(two_platform_channel) as server:
        records = {
            PLATFORM: channel_records(two_platform_channel, server.url, PLATFORM),
            OTHER: channel_records(two_platform_channel, server.url, OTHER, ["mac-only"]),
        }
        write_pixi_lock(tmp_path / "pixi.lock", records, channel_url=server.url)
        run = run_lockship(
            "build",
            tmp_path,
            "-p",
            PLATFORM,
            "-p",
            OTHER,
            "--stub",
            f"{PLATFORM}={frozen_stub}",
            "-o",
            tmp_path / "out",
            "--cache-dir",
            tmp_path / "cache",
            env={"LOCKSHIP_STUB_URL": f"{server.url}/no-stubs-here"},
        )
    line = one_error(run)
    assert f"no installer stub for {OTHER}: pass --stub {OTHER}=PATH" in line
    assert "--stub-dir" in line and "LOCKSHIP_STUB_URL" in line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
