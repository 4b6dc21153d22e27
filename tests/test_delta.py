"""Delta installers (``lockship build --delta-from OLD``): only what changed since OLD, applied
only to a prefix that holds exactly OLD, giving the prefix the full installer would."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from lockship.builder.errors import BuildError, UsageError
from lockship.builder.inputs.reader import InputOptions
from lockship.builder.network import NetworkOptions, make_client
from lockship.builder.output.delta import OldEnvironment, plan_delta, read_old
from lockship.builder.output.sbom import sbom_path
from lockship.builder.settings import Settings
from lockship.stub.delta import BaseMismatch, check_delta_base
from lockship.stub.destination import PrefixDestination
from lockship.stub.finish import write_marker
from lockship.stub.install import install
from lockship.stub.linking import installed_records
from lockship.stub.preflight import InstallRequest, preflight
from lockship.stub.shared.manifest import (
    BaseFile,
    DeltaBase,
    LinkedPackage,
    Manifest,
    PackageInfo,
    kept_on_update,
)
from lockship.stub.shared.payload import read_payload
from lockship.stub.shared.progress import SilentReporter
from lockship.stub.source import PayloadSource

from tests.conftest import DEMO_PLATFORM, InstallerFactory
from tests.factories import (
    core_manifest,
    locked_package,
    write_conda_package,
    write_payload,
    write_wheel,
)
from tests.factories import package_entry as info
from tests.runners import Run, run_installer, run_lockship
from tests.test_update import BASE, build, hello_says, hello_wheel, ok, package, still_works
from tests.trees import tree_state

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


def sbom_components(installer: Path) -> set[tuple[str, str, str]]:
    components = json.loads(sbom_path(installer).read_text())["components"]
    return {(c["name"], c["version"], c["hashes"][0]["content"]) for c in components}


def payload_entries(installer: Path) -> set[str]:
    return {e.name for e in read_payload(installer).entries if "/" in e.name}


def carried(installer: Path) -> set[str]:
    return {e for e in payload_entries(installer) if not e.startswith("lockship/")}


@pytest.mark.e2e
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
    # its SBOM lists the whole new version, as the full installer's does (each build served
    # the channel at its own port: the purls' channel differs)
    listed = [sbom_components(installer) for installer in (delta, full)]
    assert listed[0] == listed[1] and len(listed[0]) == 7
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


@pytest.mark.e2e
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


# --- the builder's choice and the stub's check, in process ------------------------------------


def old_of(*packages: PackageInfo, wheels: tuple[BaseFile, ...] = ()) -> OldEnvironment:
    return OldEnvironment(
        version="1",
        packages=tuple(BaseFile(p.name, p.file_name, p.sha256) for p in packages),
        wheels=wheels,
        linked=tuple(LinkedPackage.of(p) for p in packages),
    )


def test_a_delta_carries_what_is_new_or_changed_and_nothing_else() -> None:
    python, lib, tool = info("python", "3.11.0", "a"), info("lib", "1", "b"), info("tool", "1", "c")
    pure = info("pure", "1", "d", noarch="python")
    old = old_of(python, lib, tool, pure, wheels=(BaseFile("w", "w-1-py3-none-any.whl", "e"),))
    new = [python, info("lib", "2", "f"), tool, pure, info("added", "1", "g")]
    wheels = [("pypi/w-1-py3-none-any.whl", "e"), ("pypi/x-1-py3-none-any.whl", "h")]

    delta = plan_delta(old, "app", new, wheels)

    assert delta.carried == (
        "noarch/lib-2-0.conda",
        "noarch/added-1-0.conda",
        "pypi/x-1-py3-none-any.whl",
    )
    assert (delta.name, delta.version) == ("app", "1")
    assert delta.packages == old.packages and delta.wheels == old.wheels


def test_a_new_python_minor_version_carries_the_noarch_python_packages() -> None:
    # rattler relinks noarch: python packages when python's major.minor changes
    pure, generic = info("pure", "1", "d", noarch="python"), info("generic", "1", "e")
    old = old_of(info("python", "3.11.0", "a"), pure, generic)
    new = [info("python", "3.12.0", "b"), pure, generic]
    assert plan_delta(old, "app", new, []).carried == (
        "noarch/python-3.12.0-0.conda",
        "noarch/pure-1-0.conda",
    )
    patch = [info("python", "3.11.1", "c"), pure, generic]
    assert plan_delta(old, "app", patch, []).carried == ("noarch/python-3.11.1-0.conda",)


def test_a_record_that_gained_an_md5_is_carried() -> None:
    # rattler treats a record with an md5 and one without as different packages
    same = info("lib", "1", "b")
    old = old_of(PackageInfo(**{**same.__dict__, "record": {}}))
    assert plan_delta(old, "app", [same], []).carried == ("noarch/lib-1-0.conda",)


def test_the_builder_leaves_out_exactly_what_the_installer_keeps(tmp_path: Path) -> None:
    """One rule on both sides: a delta built from OLD's installer carries what an update over
    the prefix OLD's installer made does not keep, judged from that prefix's records."""
    channel, newer = tmp_path / "channel", tmp_path / "newer"
    same, changing, hashed = (
        locked_package(write_conda_package(channel, n, "1.0", files={f"share/{n}": n}))
        for n in ("same", "changing", "hashed")
    )
    changed = locked_package(write_conda_package(newer, "changing", "2.0", files={"x": "2"}))
    # the same archive, locked with an md5 this time: rattler relinks it
    md5 = hashlib.md5(hashed[1]).hexdigest()
    gained_md5 = replace(hashed[0], record={**hashed[0].record, "md5": md5})
    v1 = core_manifest([same[0], changing[0], hashed[0]])
    installer = tmp_path / "v1.sh"
    with open(installer, "wb") as out:
        write_payload(out, [(p.entry, channel / p.entry) for p in v1.packages], v1.to_dict())
    prefix = tmp_path / "env"
    plan = preflight(v1, InstallRequest(prefix), environ={"LOCKSHIP_SKIP_DISK_CHECK": "1"})
    source = PayloadSource(read_payload(installer))
    install(plan, source, PrefixDestination(prefix), SilentReporter())
    v2 = [same[0], changed[0], gained_md5]

    old = read_old(
        installer, v1.platform, name=v1.name, version=None, options=lock_options(tmp_path)
    )
    carried = plan_delta(old, v1.name, v2, []).carried
    in_prefix = [LinkedPackage.of_record(r) for r in installed_records(prefix)]
    kept = kept_on_update(in_prefix, v2)

    assert kept == {same[0].entry}
    assert carried == tuple(p.entry for p in v2 if p.entry not in kept)


def test_the_delta_survives_the_manifest_round_trip() -> None:
    delta = DeltaBase("app", "1", (BaseFile("lib", "lib-1-0.conda", None),), (), ("x/y",))
    manifest = Manifest("app", "2", "linux-64", "default", "0.1.0", (), delta=delta)
    data = json.loads(json.dumps(manifest.to_dict()))  # as the payload stores it
    assert Manifest.from_dict(data) == manifest
    del data["delta"]  # an installer from before delta installers
    assert Manifest.from_dict(data).delta is None


def lock_options(tmp_path: Path) -> InputOptions:
    defaults = Settings()
    return InputOptions(
        cache_dir=tmp_path / "cache",
        client=make_client(NetworkOptions(), timeout=defaults.timeout),
        environment=defaults.environment,
        categories=defaults.categories,
        ignore_non_wheels=defaults.ignore_pypi_non_wheel,
        concurrency=defaults.concurrency,
        retries=defaults.retries,
    )


def test_a_lock_names_its_version_in_the_workspace_beside_it(
    tmp_path: Path, demo_lock: Path
) -> None:
    old = read_old(
        demo_lock, DEMO_PLATFORM, name="lsdemo", version=None, options=lock_options(tmp_path)
    )
    assert old.version == "1.2.3"
    assert {p.name for p in old.packages} >= {"python", "lsdemo-hello"}
    assert all(p.sha256 for p in old.packages)

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(demo_lock / "pixi.lock", bare / "pixi.lock")
    with pytest.raises(UsageError) as raised:
        read_old(bare, DEMO_PLATFORM, name="lsdemo", version=None, options=lock_options(tmp_path))
    assert str(raised.value) == (
        f"the version of --delta-from {bare} is unknown (no workspace version beside it); "
        "pass --delta-version VERSION, or --delta-from the previous installer"
    )
    given = read_old(
        bare, DEMO_PLATFORM, name="lsdemo", version="0.9", options=lock_options(tmp_path)
    )
    assert given.version == "0.9" and given.packages == old.packages


def base_prefix(tmp_path: Path, packages: list[PackageInfo], wheels: dict[str, str]) -> Path:
    """A prefix as an install leaves it, as far as the base check looks."""
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    for p in packages:
        record = {"name": p.name, "fn": p.file_name, "sha256": p.sha256}
        (prefix / "conda-meta" / f"{p.name}-{p.version}-0.json").write_text(json.dumps(record))
    listed = [{"file_name": f, "sha256": s, "dist_info": "x"} for f, s in wheels.items()]
    (prefix / "conda-meta" / "lockship-wheels").write_text(json.dumps({"wheels": listed}))
    write_marker(prefix, Manifest("app", "1", "linux-64", "default", "0.1.0", tuple(packages)))
    return prefix


def delta_manifest(old: OldEnvironment, name: str = "app") -> Manifest:
    delta = DeltaBase(name, "1", old.packages, old.wheels, ())
    return Manifest(name, "2", "linux-64", "default", "0.1.0", (), delta=delta)


def test_the_base_check_compares_packages_and_wheels_by_sha256(tmp_path: Path) -> None:
    lib, tool = info("lib", "1", "b"), info("tool", "1", "c")
    wheel = BaseFile("w", "w-1-py3-none-any.whl", "e")
    manifest = delta_manifest(old_of(lib, tool, wheels=(wheel,)))
    prefix = base_prefix(tmp_path, [lib, tool], {wheel.file_name: "e"})
    check_delta_base(prefix, manifest)  # the base itself

    (prefix / "conda-meta" / "lockship-wheels").write_text(
        json.dumps({"wheels": [{"file_name": wheel.file_name, "sha256": "other"}]})
    )
    (prefix / "conda-meta" / "extra-1-0.json").write_text(
        json.dumps({"name": "extra", "fn": "extra-1-0.conda", "sha256": "x"})
    )
    with pytest.raises(BaseMismatch) as raised:
        check_delta_base(prefix, manifest)
    assert raised.value.found == "holds app 1 (2 packages differ)"


def test_the_base_check_wants_the_same_environment_name(tmp_path: Path) -> None:
    lib = info("lib", "1", "b")
    prefix = base_prefix(tmp_path, [lib], {})
    with pytest.raises(BaseMismatch) as raised:
        check_delta_base(prefix, delta_manifest(old_of(lib), name="other"))
    assert str(raised.value) == (
        f"this update needs other 1 in {prefix}; {prefix} holds app 1; install other 2 "
        "there with its full installer instead"
    )
    (prefix / "conda-meta" / "lockship").unlink()
    with pytest.raises(BaseMismatch) as raised:
        check_delta_base(prefix, delta_manifest(old_of(lib)))
    assert raised.value.found == "holds no environment made by lockship"


@pytest.mark.e2e
def test_an_installer_old_must_be_of_the_same_name_and_platform(
    tmp_path: Path, demo_installer: Path
) -> None:
    options = lock_options(tmp_path)
    old = read_old(demo_installer, DEMO_PLATFORM, name="lsdemo", version=None, options=options)
    assert old.version == "1.2.3"
    with pytest.raises(BuildError) as raised:
        read_old(demo_installer, DEMO_PLATFORM, name="other", version=None, options=options)
    assert str(raised.value) == (
        f"--delta-from {demo_installer} is an installer of lsdemo, not other; pass an earlier "
        "installer of other"
    )
    with pytest.raises(BuildError) as raised:
        read_old(demo_installer, "win-64", name="lsdemo", version=None, options=options)
    assert str(raised.value) == (
        f"--delta-from {demo_installer} is an installer for {DEMO_PLATFORM}; build the delta "
        f"for that platform (-p {DEMO_PLATFORM}) or pass the lock instead"
    )
    with pytest.raises(UsageError, match="contradicts"):
        read_old(demo_installer, DEMO_PLATFORM, name="lsdemo", version="9", options=options)


def test_delta_version_goes_only_with_delta_from() -> None:
    run = run_lockship("build", "--delta-version", "1")
    assert run.returncode == 2
    assert run.error_lines == ["ERROR: --delta-version only goes with --delta-from OLD"]
