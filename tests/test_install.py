"""Installer features end to end: update, link scripts, post-install, pyc, licenses, uninstall,
system requirements, --check, --info --json and --extract."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
import rattler

from tests.conftest import DEMO_PLATFORM, InstallerFactory, MountTmpfs
from tests.runners import Run, run_installer, run_lockship, run_on_terminal

pytestmark = pytest.mark.e2e


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def error(run: Run, code: int = 1) -> str:
    assert run.returncode == code, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return run.error_lines[0]


def package(name: str, version: str = "1.0", **kwargs: object) -> dict[str, object]:
    return {"name": name, "version": version, **kwargs}


# --- update ------------------------------------------------------------------------------


def test_update_adds_removes_and_changes_packages(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    channel = installer_factory.channel_with(
        demo_channel,
        package("keep-me", files={"share/keep.txt": "same"}),
        package("change-me", "1.0", files={"share/change.txt": "old"}),
        package("change-me", "2.0", files={"share/change.txt": "new"}),
        package("drop-me", files={"share/drop.txt": "bye"}),
        package("add-me", files={"share/add.txt": "hi"}),
    )
    base = ["lsdemo-hello", "keep-me"]
    v1 = installer_factory.build(channel, specs=[*base, "change-me ==1.0", "drop-me"])
    v2 = installer_factory.build(channel, specs=[*base, "change-me ==2.0", "add-me"])
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    keep_inode = (prefix / "share" / "keep.txt").stat().st_ino
    assert (prefix / "share" / "drop.txt").exists()

    refused = run_installer(v2, "-b", "-p", prefix)
    assert "exists and is not empty" in error(refused)

    ok(run_installer(v2, "-b", "-u", "-p", prefix))
    assert (prefix / "share" / "change.txt").read_text() == "new"
    assert (prefix / "share" / "add.txt").read_text() == "hi"
    assert not (prefix / "share" / "drop.txt").exists()
    assert (prefix / "share" / "keep.txt").stat().st_ino == keep_inode  # untouched
    metas = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert any(m.startswith("change-me-2.0-") for m in metas)
    assert not any(m.startswith(("change-me-1.0-", "drop-me-")) for m in metas)
    prefix_records = [rattler.PrefixRecord.from_path(prefix / "conda-meta" / m) for m in metas]
    assert {r.name.normalized for r in prefix_records} >= {"add-me", "keep-me", "lsdemo-hello"}
    activated = subprocess.run(
        ["bash", "-c", f'. "{prefix}/activate.sh" && lsdemo-hello'], capture_output=True, text=True
    )
    assert activated.stdout.strip() == f"lsdemo-hello from {prefix}"


def test_update_refuses_a_prefix_of_another_installer(
    tmp_path: Path, demo_installer: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    prefix = tmp_path / "env"
    ok(run_installer(demo_installer, "-b", "-p", prefix))
    marker = prefix / "conda-meta" / "lockship"
    data = json.loads(marker.read_text())
    data["name"] = "someone-else"
    marker.write_text(json.dumps(data))
    line = error(run_installer(demo_installer, "-b", "-u", "-p", prefix))
    assert "holds someone-else" in line and "pass -f" in line
    ok(run_installer(demo_installer, "-b", "-u", "-f", "-p", prefix))


# --- scripts -----------------------------------------------------------------------------

POST_LINK_OK = 'echo "linked $PKG_NAME into $PREFIX" > "$PREFIX/share/post-link-ran.txt"\n'


def test_link_scripts_run_and_are_announced(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    pre_unlink = f'echo "unlinked $PKG_NAME" >> "{tmp_path}/pre-unlink-ran.txt"\n'
    channel = installer_factory.channel_with(
        demo_channel,
        package(
            "with-post-link",
            files={"bin/.with-post-link-post-link.sh": POST_LINK_OK, "share/x.txt": "x"},
        ),
        package("with-pre-unlink", files={"bin/.with-pre-unlink-pre-unlink.sh": pre_unlink}),
    )
    installer = installer_factory.build(channel)
    info = json.loads(ok(run_installer(installer, "--info", "--json")).stdout)
    assert info["link_scripts"] == ["with-post-link", "with-pre-unlink"]
    text = ok(run_installer(installer, "--info")).stdout
    assert "link scripts:      with-post-link, with-pre-unlink (they run while installing" in text
    prefix = tmp_path / "env"
    run = ok(run_installer(installer, "-b", "-p", prefix))
    assert "Running the post-link script of with-post-link" in run.stderr
    assert (prefix / "share" / "post-link-ran.txt").read_text().startswith("linked with-post-link")
    assert not (tmp_path / "pre-unlink-ran.txt").exists()
    # py-rattler runs the pre-unlink script when an update removes its package
    without = installer_factory.build(channel, specs=["lsdemo-hello", "with-post-link"])
    ok(run_installer(without, "-b", "-u", "-p", prefix))
    assert (tmp_path / "pre-unlink-ran.txt").read_text() == "unlinked with-pre-unlink\n"


def test_failing_post_link_script_fails_the_install(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    channel = installer_factory.channel_with(
        demo_channel,
        package("bad-post-link", files={"bin/.bad-post-link-post-link.sh": "exit 3\n"}),
    )
    installer = installer_factory.build(channel)
    prefix = tmp_path / "env"
    line = error(run_installer(installer, "-b", "-p", prefix))
    assert "the post-link script of bad-post-link failed" in line
    assert not prefix.exists()


def test_no_link_scripts_is_announced(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    channel = installer_factory.channel_with(
        demo_channel,
        package("with-post-link", files={"bin/.with-post-link-post-link.sh": POST_LINK_OK}),
    )
    installer = installer_factory.build(channel, "--no-link-scripts")
    prefix = tmp_path / "env"
    run = ok(run_installer(installer, "-b", "-p", prefix))
    assert "post-link scripts will not run" in run.stderr
    assert not (prefix / "share" / "post-link-ran.txt").exists()


def test_post_install_script_gets_its_environment(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    script = tmp_path / "after.sh"
    script.write_text(
        'echo "post-install says hi"\n'
        'printf "%s|%s|%s|%s|%s\\n" "$PREFIX" "$INSTALLER_NAME" "$INSTALLER_VERSION" '
        '"$INSTALLER_PLATFORM" "$INSTALLER_UNATTENDED" > "$PREFIX/post-install.txt"\n'
    )
    installer = installer_factory.build(demo_channel, "--post-install", script)
    prefix = tmp_path / "env"
    run = ok(run_installer(installer, "-b", "-p", prefix))
    assert "post-install says hi" in run.stdout
    assert (prefix / "post-install.txt").read_text() == f"{prefix}|lsdemo|1.2.3|{DEMO_PLATFORM}|1\n"
    skipped = tmp_path / "skipped"
    run = ok(run_installer(installer, "-b", "--no-post-install", "-p", skipped))
    assert "Skipping the post-install script" in run.stderr
    assert not (skipped / "post-install.txt").exists()


def test_a_failing_post_install_script_fails_the_install_with_exit_1_and_a_log(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("echo about to fail\nexit 2\n")  # 2 is not a usage error of the installer
    installer = installer_factory.build(demo_channel, "--post-install", script)
    prefix = tmp_path / "env"
    run = run_installer(installer, "-b", "-p", prefix)
    line = error(run, code=1)
    assert "post-install script post-install.sh failed with exit code 2" in line
    log = Path(line.rsplit("(details: ", 1)[1].rstrip(")"))
    assert "PostInstallError" in log.read_text()
    assert "about to fail" in run.stdout
    assert not prefix.exists()


def test_post_install_script_must_match_the_platform(tmp_path: Path, demo_lock: Path) -> None:
    script = tmp_path / "after.bat"
    script.write_text("echo hi\n")
    result = run_lockship("build", demo_lock, "--post-install", script, "--stub", script)
    assert result.returncode == 1
    assert "must end in .sh, not after.bat" in result.stderr


def test_pyc_files_are_compiled(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    ok(run_installer(demo_installer, "-b", "-p", prefix))
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert list(site.rglob("__pycache__/*.pyc")), sorted(site.rglob("*"))


def test_no_pyc(tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory) -> None:
    installer = installer_factory.build(demo_channel, "--no-pyc")
    prefix = tmp_path / "env"
    ok(run_installer(installer, "-b", "-p", prefix))
    assert not list(prefix.rglob("*.pyc"))


# --- license -----------------------------------------------------------------------------


def test_license_needs_acceptance(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    license_file = tmp_path / "LICENSE"
    license_file.write_text("You may use this environment for good only.\n")
    installer = installer_factory.build(demo_channel, "--license", license_file)
    help_text = " ".join(ok(run_installer(installer, "--help")).stdout.split())
    assert "accepts the license" in help_text
    prefix = tmp_path / "env"
    line = error(run_installer(installer, "-p", prefix))
    assert "license that must be accepted" in line and "-b" in line
    assert not prefix.exists()
    ok(run_installer(installer, "-b", "-p", prefix))
    assert json.loads(ok(run_installer(installer, "--info", "--json")).stdout)["license"] is True
    on_terminal = tmp_path / "tty"
    code, output = run_on_terminal(installer, "-p", on_terminal, answers="yes\n\n")
    assert code == 0, output
    assert "You may use this environment for good only." in output
    assert "Do you accept the license terms? [yes/no]" in output
    declined = tmp_path / "declined"
    code, output = run_on_terminal(installer, "-p", declined, answers="no\n")
    assert code == 1 and "The license was not accepted" in output
    assert not declined.exists()


# --- uninstall ---------------------------------------------------------------------------


def test_uninstall_removes_exactly_the_prefix(tmp_path: Path, demo_installer: Path) -> None:
    parent = tmp_path / "apps"
    prefix = parent / "env"
    ok(run_installer(demo_installer, "-b", "-p", prefix))
    (parent / "neighbour.txt").write_text("stay")
    declined = subprocess.run(
        ["sh", prefix / "uninstall.sh"], input="n\n", capture_output=True, text=True
    )
    assert declined.returncode == 1 and prefix.exists()
    done = subprocess.run(["sh", prefix / "uninstall.sh", "-b"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not prefix.exists()
    assert sorted(p.name for p in parent.iterdir()) == ["neighbour.txt"]


# --- system requirements -----------------------------------------------------------------


def test_glibc_requirement_and_override(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    channel = installer_factory.channel_with(
        demo_channel,
        package(
            "needs-new-glibc", subdir=DEMO_PLATFORM, depends=["__glibc >=99.1"], files={"a": "a"}
        ),
    )
    installer = installer_factory.build(channel, virtual_packages={"__glibc": "99.5"})
    prefix = tmp_path / "env"
    line = error(run_installer(installer, "-b", "-p", prefix))
    assert "__glibc >=99.1 is required but this machine has __glibc" in line
    assert "CONDA_OVERRIDE_GLIBC" in line
    assert not prefix.exists()
    ok(run_installer(installer, "-b", "-p", prefix, env={"CONDA_OVERRIDE_GLIBC": "99.2"}))


def test_not_enough_disk_space(tmp_path: Path, demo_installer: Path) -> None:
    """A small tmpfs: the installer refuses before writing and says how much it needs."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        prefix = mount / "env"
        line = error(run_installer(demo_installer, "-b", "-p", prefix))
        assert "not enough free disk space" in line and "needs" in line and "free" in line
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", mount], check=True)


# --- check, info, extract ----------------------------------------------------------------


def test_check(tmp_path: Path, demo_installer: Path) -> None:
    checked = ok(run_installer(demo_installer, "--check")).stdout
    assert checked.startswith("OK: ")
    # lockship build wrote SHA256SUMS next to it; --check agrees with it, as does sha256sum
    assert "matches SHA256SUMS" in checked
    sums = subprocess.run(
        ["sha256sum", "--check", "--ignore-missing", "SHA256SUMS"],
        cwd=demo_installer.parent,
        capture_output=True,
        text=True,
    )
    assert sums.returncode == 0 and f"{demo_installer.name}: OK" in sums.stdout
    from lockship.stub.shared.payload import read_payload

    payload = read_payload(demo_installer)
    damaged = tmp_path / "damaged.sh"
    data = bytearray(demo_installer.read_bytes())
    entry = payload.entries[-1]
    data[entry.offset + entry.size // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o755)
    assert f"{entry.name} is corrupt" in error(run_installer(damaged, "--check"))
    # a copy next to a SHA256SUMS that lists other bytes is refused
    listed = tmp_path / "listed"
    listed.mkdir()
    copy = listed / demo_installer.name
    copy.write_bytes(demo_installer.read_bytes())
    (listed / "SHA256SUMS").write_text(f"{'0' * 64}  {copy.name}\n")
    assert "does not match" in error(run_installer(copy, "--check"))


def test_info_json(demo_installer: Path) -> None:
    info = json.loads(ok(run_installer(demo_installer, "--info", "--json")).stdout)
    assert (info["name"], info["version"], info["platform"]) == ("lsdemo", "1.2.3", DEMO_PLATFORM)
    assert info["payload_format"] == 1 and info["lockship_version"] == "0.1.0"
    names = [p["name"] for p in info["packages"]]
    assert "lsdemo-hello" in names
    for p in info["packages"]:
        assert len(p["sha256"]) == 64 and p["size"] > 0 and p["version"] and p["build"]
    assert info["license"] is False and info["post_install"] is False
    assert isinstance(info["virtual_packages"], list)


def test_extract_writes_a_channel_rattler_solves_to_the_locked_set(
    tmp_path: Path, demo_installer: Path
) -> None:
    target = tmp_path / "out"
    ok(run_installer(demo_installer, "--extract", target))
    info = json.loads(ok(run_installer(demo_installer, "--info", "--json")).stdout)
    locked = {(p["name"], p["version"], p["build"]) for p in info["packages"]}
    channel = rattler.Channel((target / "channel").as_uri())
    specs = [f"{n} =={v} {b}" for n, v, b in locked]
    solved = asyncio.run(
        rattler.solve(sources=[channel], specs=specs, platforms=[DEMO_PLATFORM, "noarch"])
    )
    assert {(r.name.normalized, str(r.version), str(r.build)) for r in solved} == locked
    lock = rattler.LockFile.from_path(target / "pixi.lock")
    env = lock.default_environment()
    assert env is not None
    platform = env.platforms()[0]
    records = env.conda_repodata_records_for_platform(platform) or []
    assert {r.name.normalized for r in records} == {n for n, _, _ in locked}
    assert "dependencies:" in (target / "environment.yml").read_text()
    # and the extracted channel installs offline with rattler
    prefix = tmp_path / "env"
    asyncio.run(rattler.install(records, prefix, cache_dir=tmp_path / "cache", show_progress=False))
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"


def test_extract_into_a_project_folder_overwrites_nothing(
    tmp_path: Path, demo_installer: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pixi.toml").write_text("[workspace]\n")
    (project / "pixi.lock").write_text("my own lock\n")
    line = error(run_installer(demo_installer, "--extract", project))
    assert str(project / "pixi.lock") in line and "already exists" in line, line
    assert (project / "pixi.lock").read_text() == "my own lock\n"
    assert sorted(p.name for p in project.iterdir()) == ["pixi.lock", "pixi.toml"]
    # each of the other targets is refused the same way
    for name in ("environment.yml", "README.txt", "channel"):
        folder = tmp_path / f"has-{name}"
        folder.mkdir()
        (folder / name).write_text("mine\n")
        line = error(run_installer(demo_installer, "--extract", folder))
        assert f"{folder / name} already exists" in line, line
        assert [p.name for p in folder.iterdir()] == [name]
    # a folder holding other things is fine: the four new entries go beside them
    ok(run_installer(demo_installer, "--extract", tmp_path / "other" / "deeper"))
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "notes.txt").write_text("mine\n")
    ok(run_installer(demo_installer, "--extract", beside))
    assert sorted(p.name for p in beside.iterdir()) == [
        "README.txt", "channel", "environment.yml", "notes.txt", "pixi.lock",
    ]  # fmt: skip


def test_a_failed_extract_leaves_nothing_and_runs_again(
    tmp_path: Path, demo_installer: Path, mount_tmpfs: MountTmpfs
) -> None:
    info = json.loads(ok(run_installer(demo_installer, "--info", "--json")).stdout)
    size = sum(p["size"] for p in info["packages"])
    small = mount_tmpfs(f"{max(size // 2 // 4096, 1) * 4}k")
    target = small / "out"
    line = error(run_installer(demo_installer, "--extract", target))
    assert "No space left on device" in line, line
    assert list(small.iterdir()) == []  # not even the folder it created
    (small / "kept").mkdir()
    target = small / "kept"
    error(run_installer(demo_installer, "--extract", target))
    assert list(target.iterdir()) == []
    subprocess.run(["mount", "-o", f"remount,size={size * 4}", small], check=True)
    ok(run_installer(demo_installer, "--extract", target))
    assert sorted(p.name for p in target.iterdir()) == [
        "README.txt", "channel", "environment.yml", "pixi.lock",
    ]  # fmt: skip


def test_reproducible_builds(
    tmp_path: Path, demo_lock: Path, frozen_stub: Path, download_cache: Path
) -> None:
    outputs = []
    for n in (1, 2):
        result = run_lockship(
            "build",
            demo_lock,
            "-o",
            tmp_path / str(n),
            "--stub",
            frozen_stub,
            "--cache-dir",
            download_cache,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(Path(result.stdout.strip().splitlines()[-1]).read_bytes())
    assert outputs[0] == outputs[1]
    assert os.environ.get("SOURCE_DATE_EPOCH") is None  # nothing relies on it
