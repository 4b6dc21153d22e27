"""Delta installers (``lockship build --delta-from OLD``): only what changed since OLD, applied
only to a prefix that holds exactly OLD, giving the prefix the full installer would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lockship.stub.payload import read_payload
from tests.conftest import DEMO_PLATFORM, InstallerFactory
from tests.factories import write_wheel
from tests.runners import Run, run_installer
from tests.test_update import BASE, build, hello_says, hello_wheel, ok, package, still_works
from tests.trees import tree_state

pytestmark = pytest.mark.e2e

V1 = [*BASE, "changing ==1.0"]
V2 = [*BASE, "changing ==2.0", "add-me"]


@pytest.fixture
def channel(demo_channel: Path, installer_factory: InstallerFactory) -> Path:
    return installer_factory.channel_with(
        demo_channel,
        package("add-me", files={"share/add.txt": "hi"}),
        package("changing", "1.0", files={"share/changing.txt": "one"}),
        package("changing", "2.0", files={"share/changing.txt": "two"}),
    )


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "wheels"
    return {
        "hello-1": hello_wheel(folder, "1.0"),
        "hello-2": hello_wheel(folder, "2.0"),
        "same": write_wheel(folder, "same", "1.0", modules={"same.py": "VALUE = 1\n"}),
    }


def comparable(prefix: Path) -> dict[str, tuple[str, int, str]]:
    """The prefix's tree, less what differs between two runs of the same install: the history's
    dates, the timestamps compiled into .pyc files (their presence is compared) and the port
    of the channel each build served in the records' URLs."""
    state = tree_state(prefix)
    state.pop("conda-meta/history")
    for name, (kind, mode, _) in state.items():
        if name.endswith(".pyc"):
            state[name] = (kind, mode, "")
        elif name.startswith("conda-meta/") and name.endswith(".json"):
            record = json.loads((prefix / name).read_text())
            del record["url"], record["channel"]
            state[name] = (kind, mode, json.dumps(record, sort_keys=True))
    return state


def conda_packages(prefix: Path) -> set[tuple[str, str]]:
    records = [json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("*.json")]
    return {(r["fn"], r["sha256"]) for r in records}


def errors(run: Run) -> list[str]:
    """The run's ERROR lines without the log file they name."""
    return [line.split(" (details: ")[0] for line in run.error_lines]


def payload_entries(installer: Path) -> set[str]:
    return {e.name for e in read_payload(installer).entries if "/" in e.name}


def carried(installer: Path) -> set[str]:
    return {e for e in payload_entries(installer) if not e.startswith("lockship/")}


def test_a_delta_gives_the_prefix_the_full_installer_gives(
    tmp_path: Path, channel: Path, installer_factory: InstallerFactory, wheels: dict[str, Path]
) -> None:
    v1 = build(tmp_path, installer_factory, channel, "1", V1, [wheels["hello-1"], wheels["same"]])
    v2_wheels = [wheels["hello-2"], wheels["same"]]
    full = build(tmp_path, installer_factory, channel, "2", V2, v2_wheels)
    delta = build(
        tmp_path, installer_factory, channel, "2", V2, v2_wheels, "--delta-from", v1.parent
    )
    from_installer = build(
        tmp_path, installer_factory, channel, "2", V2, v2_wheels, "--delta-from", v1
    )

    assert delta.name == f"app-2-{DEMO_PLATFORM}-from-1.sh"
    # only what changed: the new package, the changed one, the changed wheel
    assert carried(delta) == {
        f"noarch/{next((channel / 'noarch').glob('add-me-*.conda')).name}",
        f"noarch/{next((channel / 'noarch').glob('changing-2.0-*.conda')).name}",
        f"pypi/{wheels['hello-2'].name}",
    }
    assert payload_entries(from_installer) == payload_entries(delta)
    assert delta.stat().st_size < full.stat().st_size
    info = json.loads(ok(run_installer(delta, "--info", "--json")).stdout)
    assert info["delta_from"]["name"] == "app" and info["delta_from"]["version"] == "1"
    assert sorted(info["delta_from"]["carried"]) == sorted(carried(delta))
    text = ok(run_installer(delta, "--info")).stdout
    assert (
        "update of:         app 1 (4 packages, 2 wheels), exactly; carries 2 of 5 packages "
        "and 1 of 2 wheels"
    ) in text.splitlines()

    # the channel is gone: a package the delta does not carry could not be fetched
    prefix = tmp_path / "env"
    ok(run_installer(v1, "-b", "-p", prefix))
    ok(run_installer(full, "-b", "-u", "-p", prefix))
    by_full, packages_by_full = comparable(prefix), conda_packages(prefix)
    shutil.rmtree(prefix)
    ok(run_installer(v1, "-b", "-p", prefix))
    unchanged = prefix / "bin" / "lsdemo-hello"
    inode = unchanged.stat().st_ino

    run = ok(run_installer(delta, "-b", "-p", prefix))  # -u is implied

    assert f"Updating app 2 (5 packages) into {prefix}" in run.stderr
    assert conda_packages(prefix) == packages_by_full
    assert comparable(prefix) == by_full
    assert unchanged.stat().st_ino == inode  # unchanged packages are left where they are
    assert hello_says(prefix) == "hello 2.0"
    assert (prefix / "share" / "changing.txt").read_text() == "two"
    assert json.loads((prefix / "conda-meta" / "lockship").read_text())["version"] == "2"
    still_works(prefix)


def test_a_delta_refuses_any_prefix_but_its_base(
    tmp_path: Path, channel: Path, installer_factory: InstallerFactory, wheels: dict[str, Path]
) -> None:
    v1_wheels = [wheels["hello-1"], wheels["same"]]
    v1 = build(tmp_path, installer_factory, channel, "1", V1, v1_wheels)
    other = build(tmp_path, installer_factory, channel, "0.9", [*BASE, "changing ==2.0"], v1_wheels)
    delta = build(
        tmp_path,
        installer_factory,
        channel,
        "2",
        V2,
        [wheels["hello-2"], wheels["same"]],
        "--delta-from",
        v1,
    )
    full = "install app 2 there with its full installer instead"
    prefix = tmp_path / "env"
    ok(run_installer(other, "-b", "-p", prefix))
    before = tree_state(prefix)

    run = run_installer(delta, "-b", "-p", prefix)

    assert run.returncode == 1
    assert errors(run) == [
        f"ERROR: this update needs app 1 in {prefix}; {prefix} holds app 0.9 "
        f"(1 package differs); {full}"
    ]
    assert tree_state(prefix) == before

    run = run_installer(delta, "-b", "-u", "-f", "-p", prefix)
    assert errors(run) == [
        "ERROR: this installer only updates app 1 to 2, so it cannot take -f; reinstall "
        "with the full installer of app 2"
    ]

    fresh = tmp_path / "fresh"
    run = run_installer(delta, "-b", "-p", fresh)
    assert errors(run) == [
        f"ERROR: this update needs app 1 in {fresh}; {fresh} does not exist; {full}"
    ]
    assert not fresh.exists()
    fresh.mkdir()
    run = run_installer(delta, "-b", "-u", "-p", fresh)
    assert errors(run) == [f"ERROR: this update needs app 1 in {fresh}; {fresh} is empty; {full}"]
    assert list(fresh.iterdir()) == []

    # the base it names is the one it takes
    ok(run_installer(v1, "-b", "-p", tmp_path / "base"))
    ok(run_installer(delta, "-b", "-p", tmp_path / "base"))
