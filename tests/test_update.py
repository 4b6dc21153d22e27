"""Shipping version 2 where version 1 runs: -u and -f with conda packages and PyPI wheels, all
or nothing on every failure, and recovery after the installer was killed outright."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DEMO_PLATFORM, InstallerFactory
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    write_pixi_lock,
    write_wheel,
)
from tests.runners import Run, run_installer, run_lockship, start_until_asleep
from tests.trees import tree_state

pytestmark = pytest.mark.e2e

SITE = Path("lib") / "python3.11" / "site-packages"
BASE = ["python", "lsdemo-hello"]


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def hello_wheel(folder: Path, version: str) -> Path:
    return write_wheel(
        folder / version,
        "hello",
        version,
        modules={"hello/__init__.py": f"def main():\n    print('hello {version}')\n"},
        console_scripts={"hello": "hello:main"},
    )


def build(
    tmp_path: Path,
    factory: InstallerFactory,
    channel: Path,
    version: str,
    specs: list[str],
    wheels: list[Path],
    *args: str | Path,
) -> Path:
    """An installer of ``app VERSION``: the specs solved from ``channel`` plus ``wheels``."""
    workspace = tmp_path / f"ws-{version}-{len(list(tmp_path.glob('ws-*')))}"
    workspace.mkdir()
    for wheel in wheels:
        (channel / wheel.name).write_bytes(wheel.read_bytes())
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM, specs)
        lock = write_pixi_lock(
            workspace / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url
        )
        add_pypi_packages(
            lock,
            DEMO_PLATFORM,
            [
                (
                    w.name.split("-")[0],
                    w.name.split("-")[1],
                    f"{server.url}/{w.name}",
                    hashlib.sha256(w.read_bytes()).hexdigest(),
                )
                for w in wheels
            ],
        )
        (workspace / "pixi.toml").write_text(f'[workspace]\nname = "app"\nversion = "{version}"\n')
        run = run_lockship(
            "build",
            workspace,
            "--stub",
            factory.stub,
            "-o",
            workspace,
            "--cache-dir",
            factory.cache,
            *args,
        )
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip().splitlines()[-1])


def package(name: str, version: str = "1.0", **kwargs: object) -> dict[str, object]:
    return {"name": name, "version": version, **kwargs}


def hello_says(prefix: Path) -> str:
    out = subprocess.run([prefix / "bin" / "hello"], capture_output=True, text=True, check=False)
    return out.stdout.strip() + out.stderr.strip()


def still_works(prefix: Path) -> None:
    out = subprocess.run(
        ["bash", "-c", f'. "{prefix}/activate.sh" && lsdemo-hello'], capture_output=True, text=True
    )
    assert out.stdout.strip() == f"lsdemo-hello from {prefix}", out.stderr


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "wheels"
    return {
        "hello-1": hello_wheel(folder, "1.0"),
        "hello-2": hello_wheel(folder, "2.0"),
        "gone": write_wheel(
            folder,
            "gone",
            "1.0",
            modules={"gone.py": "def main():\n    print('gone')\n"},
            console_scripts={"gone": "gone:main"},
        ),
        "same": write_wheel(folder, "same", "1.0", modules={"same.py": "VALUE = 1\n"}),
    }


def test_update_replaces_wheels_by_their_record_and_keeps_unchanged_ones(
    tmp_path: Path,
    demo_channel: Path,
    installer_factory: InstallerFactory,
    wheels: dict[str, Path],
) -> None:
    channel = installer_factory.channel_with(
        demo_channel, package("add-me", files={"share/add.txt": "hi"})
    )
    v1 = build(
        tmp_path,
        installer_factory,
        channel,
        "1",
        BASE,
        [wheels["hello-1"], wheels["gone"], wheels["same"]],
    )
    v2 = build(
        tmp_path,
        installer_factory,
        channel,
        "2",
        [*BASE, "add-me"],
        [wheels["hello-2"], wheels["same"]],
    )
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    assert hello_says(prefix) == "hello 1.0"
    assert (prefix / "bin" / "gone").exists()
    same_inode = (prefix / SITE / "same.py").stat().st_ino

    ok(run_installer(v2, "-b", "-u", "-p", prefix))

    assert hello_says(prefix) == "hello 2.0"
    site = prefix / SITE
    assert not (site / "hello-1.0.dist-info").exists()
    assert (site / "hello-2.0.dist-info" / "RECORD").is_file()
    # a wheel dropped from the lock leaves nothing behind: module, dist-info, console script
    assert not (site / "gone.py").exists()
    assert not list(site.glob("gone-*"))
    assert not (prefix / "bin" / "gone").exists()
    assert not list((site / "__pycache__").glob("gone.*"))
    assert (site / "same.py").stat().st_ino == same_inode  # unchanged: left alone
    assert (prefix / "share" / "add.txt").read_text() == "hi"
    assert not (prefix / "LOCKSHIP-INCOMPLETE.txt").exists()
    assert sorted(p.name for p in prefix.iterdir() if p.name.startswith(".lockship")) == []
    marker = json.loads((prefix / "conda-meta" / "lockship").read_text())
    assert marker["version"] == "2"
    still_works(prefix)

    # -f: the same version again over itself
    ok(run_installer(v2, "-b", "-f", "-p", prefix))
    assert hello_says(prefix) == "hello 2.0"
    still_works(prefix)

    info = json.loads(ok(run_installer(v2, "--info", "--json")).stdout)
    assert info["pypi_wheels"] == [f"pypi/{wheels['hello-2'].name}", f"pypi/{wheels['same'].name}"]
    described = ok(run_installer(v2, "--info")).stdout
    assert "hello" in described and "2.0" in described and "(PyPI)" in described


FAILING_POST_LINK = package("bad-post-link", files={"bin/.bad-post-link-post-link.sh": "exit 3\n"})
CLASH = package("clash", files={f"{SITE.as_posix()}/clash.py": "OWNER = 'conda'\n"})


@pytest.mark.parametrize("failure", ["unpacking", "post-link", "post-install", "wheel"])
def test_a_failed_update_leaves_the_environment_exactly_as_it_was(
    tmp_path: Path,
    demo_channel: Path,
    installer_factory: InstallerFactory,
    wheels: dict[str, Path],
    failure: str,
) -> None:
    channel = installer_factory.channel_with(demo_channel, FAILING_POST_LINK, CLASH)
    v1 = build(tmp_path, installer_factory, channel, "1", BASE, [wheels["hello-1"], wheels["gone"]])
    specs, v2_wheels, extra = [*BASE], [wheels["hello-2"]], []
    if failure == "post-link":
        specs.append("bad-post-link")
    elif failure == "post-install":
        script = tmp_path / "fail.sh"
        script.write_text("exit 4\n")
        extra = ["--post-install", script]
    elif failure == "wheel":
        specs.append("clash")
        v2_wheels.append(write_wheel(tmp_path / "w", "clash", "1.0", modules={"clash.py": "x\n"}))
    else:
        specs.append("clash")  # a package new in v2, so it is unpacked: damaged below
    v2 = build(tmp_path, installer_factory, channel, "2", specs, v2_wheels, *extra)
    if failure == "unpacking":
        damage_entry(v2, "clash")
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    before = tree_state(prefix)

    run = run_installer(v2, "-b", "-u", "-p", prefix)

    assert run.returncode != 0
    (line,) = run.error_lines
    assert f"; the environment at {prefix} is unchanged (details: " in line, line
    assert tree_state(prefix) == before
    assert hello_says(prefix) == "hello 1.0"
    still_works(prefix)


def damage_entry(installer: Path, package_name: str) -> None:
    """Flip a byte in the middle of a package's archive inside the installer."""
    from lockship.stub.shared.payload import read_payload

    payload = read_payload(installer)
    (entry,) = [e for e in payload.entries if e.name.rsplit("/", 1)[-1].startswith(package_name)]
    data = bytearray(installer.read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x01
    installer.write_bytes(bytes(data))


def sleeping_post_link(seconds: int) -> dict[str, object]:
    script = f'mkdir -p "$PREFIX/share"\ntouch "$PREFIX/share/asleep"\nsleep {seconds}\n'
    return package("sleepy", files={"bin/.sleepy-post-link.sh": script})


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_an_update_rolls_it_back(
    tmp_path: Path,
    demo_channel: Path,
    installer_factory: InstallerFactory,
    wheels: dict[str, Path],
    sig: signal.Signals,
    code: int,
) -> None:
    channel = installer_factory.channel_with(demo_channel, sleeping_post_link(30))
    v1 = build(tmp_path, installer_factory, channel, "1", BASE, [wheels["hello-1"]])
    v2 = build(tmp_path, installer_factory, channel, "2", [*BASE, "sleepy"], [wheels["hello-2"]])
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    before = tree_state(prefix)
    process = start_until_asleep(v2, prefix, "-u")
    os.kill(process.pid, sig)  # the installer only, as a terminal's Ctrl-C or a kill would
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert f"the environment at {prefix} is unchanged" in stderr
    assert tree_state(prefix) == before
    still_works(prefix)


@pytest.mark.parametrize("next_run", ["--recover", "-u"])
def test_an_update_killed_outright_is_restored_by_the_next_run(
    tmp_path: Path,
    demo_channel: Path,
    installer_factory: InstallerFactory,
    wheels: dict[str, Path],
    next_run: str,
) -> None:
    channel = installer_factory.channel_with(demo_channel, sleeping_post_link(60))
    v1 = build(tmp_path, installer_factory, channel, "1", BASE, [wheels["hello-1"]])
    v2 = build(tmp_path, installer_factory, channel, "2", [*BASE, "sleepy"], [wheels["hello-2"]])
    v3 = build(tmp_path, installer_factory, channel, "3", BASE, [wheels["hello-2"]])
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    before = tree_state(prefix)
    process = start_until_asleep(v2, prefix, "-u")
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert tree_state(prefix) != before  # the update was half done

    run = ok(run_installer(v3, "-b", next_run, "-p", prefix))

    restored = (
        f"An update of {prefix} was interrupted; restored the environment as it was "
        "before it (app 1)"
    )
    assert restored in run.stderr.splitlines(), run.stderr
    if next_run == "--recover":
        assert tree_state(prefix) == before
        assert hello_says(prefix) == "hello 1.0"
    else:
        assert hello_says(prefix) == "hello 2.0"
    still_works(prefix)


def test_a_disk_full_during_an_update_leaves_the_environment_unchanged(
    tmp_path: Path,
    demo_channel: Path,
    installer_factory: InstallerFactory,
    wheels: dict[str, Path],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    big = package("big", files={"share/big.bin": os.urandom(24 * 1024 * 1024)})
    channel = installer_factory.channel_with(demo_channel, big)
    v1 = build(tmp_path, installer_factory, channel, "1", BASE, [wheels["hello-1"]])
    v2 = build(tmp_path, installer_factory, channel, "2", [*BASE, "big"], [wheels["hello-2"]])
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", disk], check=True)
    try:
        prefix = disk / "env"
        ok(run_installer(v1, "-b", "-p", prefix))
        before = tree_state(prefix)
        # past the free-space check, so the disk really fills up while writing
        run = run_installer(v2, "-b", "-u", "-p", prefix, env={"LOCKSHIP_SKIP_DISK_CHECK": "1"})
        assert run.returncode == 1, run.stdout + run.stderr
        (line,) = run.error_lines
        assert "No space left on device" in line, line
        assert f"; the environment at {prefix} is unchanged (details: " in line, line
        assert tree_state(prefix) == before
        still_works(prefix)
    finally:
        subprocess.run(["umount", "-l", disk], check=False)
