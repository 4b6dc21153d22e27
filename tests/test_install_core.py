"""The install core in process: ``install(source, destination, reporter)`` over an in-memory
source (and a real payload for the worker route) into a ``tmp_path`` prefix, with real rattler
linking of small real conda packages."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from lockship.stub.destination import PrefixDestination, RolledBack
from lockship.stub.errors import InstallError, LinkError
from lockship.stub.install import install
from lockship.stub.manifest import InstallerOptions, Manifest, PackageInfo
from lockship.stub.payload import EntryChecksumMismatch, read_payload
from lockship.stub.postinstall import PostInstallError
from lockship.stub.preflight import InstallRequest, preflight
from lockship.stub.source import MissingEntry, PayloadSource

from tests.factories import (
    MemorySource,
    RecordingReporter,
    core_manifest,
    locked_package,
    write_conda_package,
    write_payload,
    write_wheel,
)
from tests.trees import tree_state

PLACEHOLDER = "/opt/placeholder_" + "x" * 40
NO_DISK_CHECK = {"LOCKSHIP_SKIP_DISK_CHECK": "1"}
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="worker processes unpack on Linux only"
)


def packages(root: Path, *, post_link: str | None = None) -> list[tuple[PackageInfo, bytes]]:
    channel = root / "channel"
    archives = [
        write_conda_package(
            channel,
            "alpha",
            "1.0",
            files={"share/alpha.txt": f"installed at {PLACEHOLDER}\n"},
            text_placeholders={"share/alpha.txt": PLACEHOLDER},
        ),
        write_conda_package(channel, "beta", "2.0", files={"share/beta.txt": "beta\n"}),
    ]
    if post_link is not None:
        archives.append(
            write_conda_package(
                channel, "hooked", "1.0", files={"bin/.hooked-post-link.sh": post_link}
            )
        )
    return [locked_package(a) for a in archives]


def source_for(
    locked: list[tuple[PackageInfo, bytes]],
    options: InstallerOptions | None = None,
    extra: dict[str, bytes] | None = None,
) -> MemorySource:
    manifest = core_manifest([p for p, _ in locked], options=options)
    return MemorySource(manifest, {p.entry: blob for p, blob in locked} | (extra or {}))


def destination(
    manifest: Manifest, prefix: Path, *, workers: str = "0", **request: bool
) -> PrefixDestination:
    environ = {**NO_DISK_CHECK, "LOCKSHIP_UNPACK_WORKERS": workers}
    plan = preflight(manifest, InstallRequest(prefix=prefix, **request), environ=environ)
    return PrefixDestination(plan)


def conda_meta(prefix: Path) -> dict[str, dict[str, object]]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((prefix / "conda-meta").glob("*.json"))
    }


def test_installs_relocates_and_records_the_locked_urls(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    source = source_for(locked)
    prefix = tmp_path / "env"
    reporter = RecordingReporter()
    install(source, destination(source.manifest, prefix), reporter)

    assert (prefix / "share" / "alpha.txt").read_text() == f"installed at {prefix}\n"
    assert (prefix / "share" / "beta.txt").read_text() == "beta\n"
    assert reporter.stages == ["Unpacking", "Linking"]
    assert reporter.messages == []
    assert sorted(p.name for p in (prefix / "conda-meta").iterdir()) == [
        "alpha-1.0-0.json",
        "beta-2.0-0.json",
        "history",
        "lockship",
    ]
    records = conda_meta(prefix)
    assert sorted(records) == ["alpha-1.0-0.json", "beta-2.0-0.json"]
    for package, _ in locked:
        record = records[f"{package.name}-{package.version}-{package.build}.json"]
        assert record["url"] == package.url
        assert record["channel"] == package.channel
        assert record["fn"] == package.file_name
        assert record["sha256"] == package.sha256
    marker = json.loads((prefix / "conda-meta" / "lockship").read_text())
    assert marker["name"] == "coredemo"
    assert marker["packages"] == ["alpha-1.0-0.conda", "beta-2.0-0.conda"]
    history = (prefix / "conda-meta" / "history").read_text()
    assert "+demo/noarch::alpha-1.0-0\n" in history
    assert (prefix / "activate.sh").is_file() and (prefix / "uninstall.sh").is_file()
    assert sorted(p.name for p in prefix.iterdir()) == [
        "activate.env",
        "activate.fish",
        "activate.ps1",
        "activate.sh",
        "conda-meta",
        "share",
        "uninstall.sh",
    ]


@linux_only
def test_both_staging_routes_write_the_same_records(tmp_path: Path) -> None:
    """Workers unpacking out of the installer file vs rattler unpacking verified copies."""
    locked = packages(tmp_path)
    manifest = core_manifest([p for p, _ in locked])
    blob = tmp_path / "installer.bin"
    archives = {p.entry: tmp_path / "channel" / p.entry for p, _ in locked}
    with open(blob, "wb") as out:
        write_payload(out, list(archives.items()), manifest.to_dict())
    source = PayloadSource(read_payload(blob), manifest)
    trees = []
    for workers in ("2", "0"):
        prefix = tmp_path / "env"
        reporter = RecordingReporter()
        install(source, destination(manifest, prefix, workers=workers), reporter)
        assert reporter.messages == []  # no fallback: the route asked for is the one taken
        records = conda_meta(prefix)
        trees.append(records)
        alpha = records["alpha-1.0-0.json"]
        assert alpha["url"] == locked[0][0].url
        # rattler's own values: where the files were linked from (the staging folder, gone now)
        assert alpha["extracted_package_dir"] == str(prefix / ".lockship-stage/cache/alpha-1.0-0")
        assert alpha["link"] == {"source": alpha["extracted_package_dir"], "type": 1}
        assert not (prefix / ".lockship-stage").exists()
        (tmp_path / "done").mkdir(exist_ok=True)
        prefix.rename(tmp_path / "done" / workers)
    assert trees[0] == trees[1]


def test_a_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    source = source_for(locked)
    beta = locked[1][0]
    damaged = replace(source, sha256={beta.entry: "0" * 64})
    prefix = tmp_path / "parent" / "env"
    with pytest.raises(EntryChecksumMismatch) as caught:
        install(damaged, destination(source.manifest, prefix), RecordingReporter())
    assert (caught.value.name, caught.value.expected) == (beta.entry, "0" * 64)
    assert caught.value.actual == hashlib.sha256(locked[1][1]).hexdigest()
    assert not (tmp_path / "parent").exists()


def test_a_missing_entry_leaves_nothing(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    source = source_for(locked)
    gone = locked[0][0].entry
    missing = replace(source, entries={k: v for k, v in source.entries.items() if k != gone})
    prefix = tmp_path / "env"
    with pytest.raises(MissingEntry, match=f"^the installer has no entry named '{gone}'; "):
        install(missing, destination(source.manifest, prefix), RecordingReporter())
    assert not prefix.exists()


def test_a_failing_post_install_script_rolls_back_a_fresh_prefix(tmp_path: Path) -> None:
    script = b'echo "ran in $PREFIX" > "$PREFIX/ran.txt"\nexit 7\n'
    options = InstallerOptions(post_install="lockship/post-install.sh")
    source = source_for(packages(tmp_path), options, {"lockship/post-install.sh": script})
    prefix = tmp_path / "env"
    with pytest.raises(PostInstallError) as caught:
        install(source, destination(source.manifest, prefix), RecordingReporter())
    assert (caught.value.exit_code, caught.value.code) == (1, 7)
    assert str(caught.value).startswith(
        "the post-install script post-install.sh failed with exit code 7; "
    )
    assert not prefix.exists()


def test_a_failing_post_link_script_fails_and_rolls_back(tmp_path: Path) -> None:
    source = source_for(packages(tmp_path, post_link="exit 3\n"))
    prefix = tmp_path / "env"
    reporter = RecordingReporter()
    with pytest.raises(LinkError, match=r"^the post-link script of hooked failed; see the"):
        install(source, destination(source.manifest, prefix), reporter)
    assert reporter.messages == ["Running the post-link script of hooked"]
    assert not prefix.exists()


def test_a_failure_in_a_forced_prefix_restores_it_exactly(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "sub").mkdir(parents=True)
    (prefix / "mine.txt").write_text("keep")
    (prefix / "sub" / "link").symlink_to("../mine.txt")
    before = tree_state(prefix)
    options = InstallerOptions(post_install="lockship/post-install.sh")
    source = source_for(packages(tmp_path), options, {"lockship/post-install.sh": b"exit 1\n"})
    with pytest.raises(RolledBack) as raised:
        install(source, destination(source.manifest, prefix, force=True), RecordingReporter())
    assert isinstance(raised.value.error, PostInstallError)
    assert str(raised.value).endswith(f"; the environment at {prefix} is unchanged")
    assert tree_state(prefix) == before
    assert sorted(p.name for p in prefix.iterdir()) == ["mine.txt", "sub"]


def test_post_install_runs_last_or_is_skipped(tmp_path: Path) -> None:
    script = b'printf "%s" "$INSTALLER_NAME" > "$PREFIX/ran.txt"\n'
    options = InstallerOptions(post_install="lockship/post-install.sh")
    source = source_for(packages(tmp_path), options, {"lockship/post-install.sh": script})
    ran, skipped = tmp_path / "ran", tmp_path / "skipped"
    reporter = RecordingReporter()
    install(source, destination(source.manifest, ran), reporter)
    assert (ran / "ran.txt").read_text() == "coredemo"
    assert reporter.messages == ["Running the post-install script post-install.sh"]
    reporter = RecordingReporter()
    plan = destination(source.manifest, skipped, run_post_install=False)
    install(source, plan, reporter)
    assert not (skipped / "ran.txt").exists()
    assert reporter.messages == ["Skipping the post-install script (--no-post-install)"]


def test_an_update_replaces_changed_packages_and_keeps_the_locked_urls(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    prefix = tmp_path / "env"
    v1 = source_for(locked)
    install(v1, destination(v1.manifest, prefix), RecordingReporter())
    newer = locked_package(
        write_conda_package(tmp_path / "v2", "beta", "3.0", files={"share/beta.txt": "new\n"})
    )
    v2 = source_for([locked[0], newer])
    install(v2, destination(v2.manifest, prefix, update=True), RecordingReporter())
    assert (prefix / "share" / "beta.txt").read_text() == "new\n"
    records = conda_meta(prefix)
    assert sorted(records) == ["alpha-1.0-0.json", "beta-3.0-0.json"]
    assert records["beta-3.0-0.json"]["url"] == newer[0].url
    assert records["alpha-1.0-0.json"]["url"] == locked[0][0].url


def test_a_plan_for_another_manifest_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    source = source_for(packages(tmp_path))
    other = replace(source.manifest, name="other")
    prefix = tmp_path / "env"
    with pytest.raises(InstallError, match=r"^the install plan was made for another installer$"):
        install(source, destination(other, prefix), RecordingReporter())
    assert not prefix.exists()


def test_wheels_are_installed_with_the_environment_python_and_compiled(tmp_path: Path) -> None:
    python = write_conda_package(
        tmp_path / "channel",
        "python",
        "3.11.0",
        build="h0",
        files={"bin/python3.11": f'#!/bin/sh\nexec {sys.executable} "$@"\n'},
    )
    wheel = write_wheel(
        tmp_path / "wheels",
        "hello-wheel",
        "1.0",
        modules={"hello_wheel.py": "def main():\n    print('hi')\n"},
        console_scripts={"hello": "hello_wheel:main"},
    )
    entry = f"lockship/wheels/{wheel.name}"
    options = InstallerOptions(wheels=(entry,))
    source = source_for([locked_package(python)], options, {entry: wheel.read_bytes()})
    prefix = tmp_path / "env"
    reporter = RecordingReporter()
    install(source, destination(source.manifest, prefix), reporter)
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert (site / "hello_wheel.py").is_file()
    script = (prefix / "bin" / "hello").read_text()
    assert script.startswith(f"#!{prefix / 'bin' / 'python3.11'}\n")
    (recorded,) = json.loads((prefix / "conda-meta" / "lockship-wheels").read_text())["wheels"]
    assert recorded == {
        "file_name": wheel.name,
        "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "dist_info": "lib/python3.11/site-packages/hello_wheel-1.0.dist-info",
    }
    assert reporter.stages == ["Unpacking", "Linking", "Installing wheels", "Compiling .pyc"]
    assert [p.name for p in (site / "__pycache__").iterdir()] == [
        f"hello_wheel.{sys.implementation.cache_tag}.pyc"
    ]


def test_an_update_replaces_changed_wheels_removes_dropped_ones_keeps_the_rest(
    tmp_path: Path,
) -> None:
    python = locked_package(
        write_conda_package(
            tmp_path / "channel",
            "python",
            "3.11.0",
            files={"bin/python3.11": f'#!/bin/sh\nexec {sys.executable} "$@"\n'},
        )
    )
    folder = tmp_path / "wheels"
    wheels = {
        "hello-1": write_wheel(
            folder / "1",
            "hello",
            "1.0",
            modules={"hello/__init__.py": "V = 1\n"},
            console_scripts={"hello": "hello:main"},
        ),
        "hello-2": write_wheel(
            folder / "2", "hello", "2.0", modules={"hello/__init__.py": "V = 2\n"}
        ),
        "gone": write_wheel(
            folder,
            "gone",
            "1.0",
            modules={"gone.py": "G = 1\n"},
            console_scripts={"gone": "gone:m"},
        ),
        "same": write_wheel(folder, "same", "1.0", modules={"same.py": "S = 1\n"}),
    }

    def version(*names: str) -> MemorySource:
        entries = {f"pypi/{wheels[n].name}": wheels[n].read_bytes() for n in names}
        return source_for([python], InstallerOptions(wheels=tuple(entries)), entries)

    prefix = tmp_path / "env"
    site = prefix / "lib" / "python3.11" / "site-packages"
    v1 = version("hello-1", "gone", "same")
    install(v1, destination(v1.manifest, prefix), RecordingReporter())
    assert (prefix / "bin" / "gone").is_file() and (site / "gone.py").is_file()
    same_inode = (site / "same.py").stat().st_ino

    v2 = version("hello-2", "same")
    install(v2, destination(v2.manifest, prefix, update=True), RecordingReporter())

    assert (site / "hello" / "__init__.py").read_text() == "V = 2\n"
    assert not (site / "hello-1.0.dist-info").exists()
    assert not (prefix / "bin" / "hello").exists()  # 2.0 has no console script
    assert not (site / "gone.py").exists() and not (prefix / "bin" / "gone").exists()
    assert not list(site.glob("gone*")) and not list(site.glob("__pycache__/gone.*"))
    assert (site / "same.py").stat().st_ino == same_inode
    recorded = json.loads((prefix / "conda-meta" / "lockship-wheels").read_text())["wheels"]
    assert [w["file_name"] for w in recorded] == [wheels["hello-2"].name, wheels["same"].name]
    assert (prefix / "bin").is_dir() and site.is_dir()

    # -f: everything reinstalled, the unchanged wheel too
    install(v2, destination(v2.manifest, prefix, force=True), RecordingReporter())
    assert (site / "same.py").stat().st_ino != same_inode
    assert (site / "hello" / "__init__.py").read_text() == "V = 2\n"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_update_unpacks_only_what_changed(tmp_path: Path, workers: str) -> None:
    if workers != "0" and not sys.platform.startswith("linux"):
        pytest.skip("worker processes unpack on Linux only")
    channel = tmp_path / "channel"
    alpha, beta = packages(tmp_path)
    beta_2 = locked_package(
        write_conda_package(channel, "beta", "3.0", files={"share/beta.txt": "beta 3\n"})
    )
    v1, v2 = source_for([alpha, beta]), source_for([alpha, beta_2])
    prefix = tmp_path / "env"
    install(v1, destination(v1.manifest, prefix, workers=workers), RecordingReporter())
    alpha_inode = (prefix / "share" / "alpha.txt").stat().st_ino

    reporter = RecordingReporter()
    install(v2, destination(v2.manifest, prefix, workers=workers, update=True), reporter)

    assert reporter.totals["Unpacking"] == beta_2[0].size  # alpha is left as it is
    assert (prefix / "share" / "beta.txt").read_text() == "beta 3\n"
    assert (prefix / "share" / "alpha.txt").stat().st_ino == alpha_inode
    assert sorted(conda_meta(prefix)) == ["alpha-1.0-0.json", "beta-3.0-0.json"]
