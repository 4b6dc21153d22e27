"""The install core in process: ``install(plan, source, destination, reporter)`` over an
in-memory source (and a real payload for the worker route) into a ``tmp_path`` prefix, with real
rattler linking of small real conda packages; and its order, policy and rollback against a
destination that only records what it is asked."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import cast

import pytest
from lockship.stub.destination import PrefixDestination, RolledBack
from lockship.stub.errors import InstallError, LinkError
from lockship.stub.install import install
from lockship.stub.postinstall import PostInstallError
from lockship.stub.preflight import InstallPlan, InstallRequest, preflight
from lockship.stub.shared.manifest import (
    BaseFile,
    DeltaBase,
    InstallerOptions,
    Manifest,
    PackageInfo,
)
from lockship.stub.shared.payload import EntryChecksumMismatch, read_payload
from lockship.stub.shared.progress import Reporter
from lockship.stub.source import MissingEntry, PackageSource, PayloadSource

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


def install_into(
    prefix: Path,
    source: MemorySource | PayloadSource,
    reporter: RecordingReporter,
    *,
    manifest: Manifest | None = None,
    workers: str = "0",
    **request: bool,
) -> None:
    """What the installer does: preflight, then the core into a prefix destination."""
    manifest = manifest or cast(MemorySource, source).manifest
    environ = {**NO_DISK_CHECK, "LOCKSHIP_UNPACK_WORKERS": workers}
    plan = preflight(manifest, InstallRequest(prefix=prefix, **request), environ=environ)
    install(plan, source, PrefixDestination(prefix, plan.workers), reporter)


def conda_meta(prefix: Path) -> dict[str, dict[str, object]]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((prefix / "conda-meta").glob("*.json"))
    }


def test_installs_relocates_and_records_the_locked_urls(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    source = source_for(locked)
    prefix = tmp_path / "env"
    reporter = RecordingReporter()
    install_into(prefix, source, reporter)

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
    source = PayloadSource(read_payload(blob))
    trees = []
    for workers in ("2", "0"):
        prefix = tmp_path / "env"
        reporter = RecordingReporter()
        install_into(prefix, source, reporter, manifest=manifest, workers=workers)
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
        install_into(prefix, damaged, RecordingReporter())
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
        install_into(prefix, missing, RecordingReporter())
    assert not prefix.exists()


def test_a_failing_post_install_script_rolls_back_a_fresh_prefix(tmp_path: Path) -> None:
    script = b'echo "ran in $PREFIX" > "$PREFIX/ran.txt"\nexit 7\n'
    options = InstallerOptions(post_install="lockship/post-install.sh")
    source = source_for(packages(tmp_path), options, {"lockship/post-install.sh": script})
    prefix = tmp_path / "env"
    with pytest.raises(PostInstallError) as caught:
        install_into(prefix, source, RecordingReporter())
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
        install_into(prefix, source, reporter)
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
        install_into(prefix, source, RecordingReporter(), force=True)
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
    install_into(ran, source, reporter)
    assert (ran / "ran.txt").read_text() == "coredemo"
    assert reporter.messages == ["Running the post-install script post-install.sh"]
    reporter = RecordingReporter()
    install_into(skipped, source, reporter, run_post_install=False)
    assert not (skipped / "ran.txt").exists()
    assert reporter.messages == ["Skipping the post-install script (--no-post-install)"]


def test_an_update_replaces_changed_packages_and_keeps_the_locked_urls(tmp_path: Path) -> None:
    locked = packages(tmp_path)
    prefix = tmp_path / "env"
    v1 = source_for(locked)
    install_into(prefix, v1, RecordingReporter())
    newer = locked_package(
        write_conda_package(tmp_path / "v2", "beta", "3.0", files={"share/beta.txt": "new\n"})
    )
    v2 = source_for([locked[0], newer])
    install_into(prefix, v2, RecordingReporter(), update=True)
    assert (prefix / "share" / "beta.txt").read_text() == "new\n"
    records = conda_meta(prefix)
    assert sorted(records) == ["alpha-1.0-0.json", "beta-3.0-0.json"]
    assert records["beta-3.0-0.json"]["url"] == newer[0].url
    assert records["alpha-1.0-0.json"]["url"] == locked[0][0].url


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
    install_into(prefix, source, reporter)
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
    install_into(prefix, v1, RecordingReporter())
    assert (prefix / "bin" / "gone").is_file() and (site / "gone.py").is_file()
    same_inode = (site / "same.py").stat().st_ino

    v2 = version("hello-2", "same")
    install_into(prefix, v2, RecordingReporter(), update=True)

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
    install_into(prefix, v2, RecordingReporter(), force=True)
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
    install_into(prefix, v1, RecordingReporter(), workers=workers)
    alpha_inode = (prefix / "share" / "alpha.txt").stat().st_ino

    reporter = RecordingReporter()
    install_into(prefix, v2, reporter, workers=workers, update=True)

    assert reporter.totals["Unpacking"] == beta_2[0].size  # alpha is left as it is
    assert (prefix / "share" / "beta.txt").read_text() == "beta 3\n"
    assert (prefix / "share" / "alpha.txt").stat().st_ino == alpha_inode
    assert sorted(conda_meta(prefix)) == ["alpha-1.0-0.json", "beta-3.0-0.json"]


# --- the core's order, policy and rollback, against a recording destination -------------------
# (no rattler, no disk: the destination only records what the core asks of it)

Call = tuple[object, ...]


class StepFailed(InstallError):
    pass


@dataclass
class RecordingDestination:
    """Records each call the core makes, in order; the step named ``fail_at`` raises."""

    #: the earlier install's wheels: file name -> sha256
    previous_wheels: dict[str, str | None] = field(default_factory=dict)
    fail_at: str | None = None
    calls: list[Call] = field(default_factory=list)

    def step(self, *call: object) -> None:
        self.calls.append(call)
        if call[0] == self.fail_at:
            raise StepFailed(f"{call[0]} failed")

    @contextmanager
    def transaction(self, installer_name: str) -> Iterator[None]:
        self.calls.append(("begin", installer_name))
        try:
            yield
        except BaseException:
            self.calls.append(("roll back",))
            raise
        self.calls.append(("commit",))

    def stage(self, manifest: Manifest, source: PackageSource, reporter: Reporter) -> str:
        self.step("stage", tuple(p.name for p in manifest.packages))
        return "staged"

    @contextmanager
    def link(self, manifest: Manifest, staged: str, reporter: Reporter) -> Iterator[None]:
        self.step("link", staged)
        self.calls.append(("discard",))
        try:
            yield
        finally:
            self.calls.append(("discarded",))

    def finalize(self, manifest: Manifest, installer_name: str) -> None:
        self.step("finalize", installer_name)

    def wheels(self, manifest: Manifest) -> RecordingWheels:
        return RecordingWheels(self)

    def compile_pyc(self, manifest: Manifest, extra: Sequence[Path], reporter: Reporter) -> None:
        self.step("compile", tuple(p.name for p in extra))

    def post_install(
        self,
        manifest: Manifest,
        source: PackageSource,
        entry: str,
        reporter: Reporter,
        *,
        unattended: bool,
    ) -> None:
        self.step("post-install", entry, unattended)


@dataclass
class RecordingWheels:
    destination: RecordingDestination

    def installed(self) -> dict[str, str | None]:
        self.destination.step("wheels installed")
        return dict(self.destination.previous_wheels)

    def remove(self, file_name: str) -> None:
        self.destination.step("remove wheel", file_name)

    def install(self, source: PackageSource, entry: str) -> list[Path]:
        self.destination.step("install wheel", entry)
        return [Path(PurePosixPath(entry).name.split("-")[0] + ".py")]


WHEELS = {f"pypi/{n}-1-py3-none-any.whl": f"wheel {n}".encode() for n in ("a", "b")}
SCRIPT = "lockship/post-install.sh"


def recorded_plan(
    *,
    wheels: dict[str, bytes] = WHEELS,
    pyc: bool = True,
    delta: DeltaBase | None = None,
    entries: dict[str, bytes] | None = None,
    **request: bool,
) -> tuple[InstallPlan, MemorySource]:
    """A plan (as preflight would make it, without looking at a disk) and its source."""
    package = PackageInfo(
        "noarch/lib-1-0.conda",
        "lib-1-0.conda",
        "lib",
        "1",
        "0",
        "noarch",
        "u",
        "c",
        "0" * 64,
        1,
        {},
    )
    options = InstallerOptions(wheels=tuple(wheels), pyc=pyc, post_install=SCRIPT)
    manifest = replace(core_manifest([package], platform="linux-64", options=options), delta=delta)
    source = MemorySource(manifest, entries if entries is not None else {**wheels, SCRIPT: b"x"})
    plan = InstallPlan(manifest, InstallRequest(Path("/nowhere"), **request), workers=0)
    return plan, source


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_first_install_calls_every_step_once_in_order() -> None:
    plan, source = recorded_plan(unattended=False)
    destination, reporter = RecordingDestination(), RecordingReporter()
    install(plan, source, destination, reporter)
    assert destination.calls == [
        ("begin", "installer"),
        ("stage", ("lib",)),
        ("link", "staged"),
        ("discard",),
        ("finalize", "installer"),
        ("install wheel", "pypi/a-1-py3-none-any.whl"),
        ("install wheel", "pypi/b-1-py3-none-any.whl"),
        ("compile", ("a.py", "b.py")),
        ("post-install", SCRIPT, False),
        ("discarded",),
        ("commit",),
    ]
    assert reporter.stages == ["Installing wheels"]
    assert reporter.totals["Installing wheels"] == 2


def test_an_update_keeps_unchanged_wheels_and_replaces_the_rest() -> None:
    plan, source = recorded_plan(update=True)
    a, b = WHEELS
    previous = {"a-1-py3-none-any.whl": sha(WHEELS[a]), "b-1-py3-none-any.whl": "0" * 64}
    destination = RecordingDestination(previous_wheels={**previous, "gone.whl": "1" * 64})
    install(plan, source, destination, RecordingReporter())
    wheel_calls = [c for c in destination.calls if "wheel" in str(c[0])]
    assert wheel_calls == [
        ("wheels installed",),
        ("remove wheel", "b-1-py3-none-any.whl"),
        ("remove wheel", "gone.whl"),
        ("install wheel", b),
    ]
    assert ("compile", ("b.py",)) in destination.calls


def test_a_reinstall_replaces_every_wheel() -> None:
    plan, source = recorded_plan(force=True)
    a, b = WHEELS
    destination = RecordingDestination(previous_wheels={"a-1-py3-none-any.whl": sha(WHEELS[a])})
    install(plan, source, destination, RecordingReporter())
    assert [c for c in destination.calls if "wheel" in str(c[0])] == [
        ("wheels installed",),
        ("remove wheel", "a-1-py3-none-any.whl"),
        ("install wheel", a),
        ("install wheel", b),
    ]


def test_a_delta_keeps_the_wheel_it_does_not_carry_without_reading_it() -> None:
    a, b = WHEELS
    base = BaseFile("a", "a-1-py3-none-any.whl", sha(WHEELS[a]))
    delta = DeltaBase("coredemo", "0.9", (), (base,), carried=(b,))
    # the source has no entry for the wheel the delta does not carry: reading it would fail
    plan, source = recorded_plan(delta=delta, entries={b: WHEELS[b], SCRIPT: b"x"}, update=True)
    destination = RecordingDestination(previous_wheels={base.file_name: base.sha256})
    install(plan, source, destination, RecordingReporter())
    assert [c for c in destination.calls if "wheel" in str(c[0])] == [
        ("wheels installed",),
        ("install wheel", b),
    ]


def test_without_wheels_pyc_or_post_install_those_steps_are_not_asked_for() -> None:
    plan, source = recorded_plan(wheels={}, pyc=False, run_post_install=False)
    destination, reporter = RecordingDestination(), RecordingReporter()
    install(plan, source, destination, reporter)
    assert [c[0] for c in destination.calls] == [
        "begin",
        "stage",
        "link",
        "discard",
        "finalize",
        "discarded",
        "commit",
    ]
    assert reporter.messages == ["Skipping the post-install script (--no-post-install)"]
    assert reporter.stages == []


STEPS = ["stage", "link", "finalize", "wheels installed", "remove wheel", "install wheel"]


@pytest.mark.parametrize("failing", [*STEPS, "compile", "post-install"])
def test_a_failing_step_stops_the_install_and_rolls_it_back(failing: str) -> None:
    plan, source = recorded_plan(update=True)
    destination = RecordingDestination(previous_wheels={"old.whl": "0" * 64}, fail_at=failing)
    with pytest.raises(StepFailed, match=f"^{failing} failed$"):
        install(plan, source, destination, RecordingReporter())
    names = [c[0] for c in destination.calls]
    done = names[: names.index(failing) + 1]
    linked = "link" in done[:-1]
    # nothing after the failing step but the end of the discard (once linked) and the rollback
    assert names == [*done, *(["discarded"] if linked else []), "roll back"]
    assert names.count(failing) == 1 and "commit" not in names
