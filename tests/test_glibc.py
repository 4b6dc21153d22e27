"""The environment's glibc floor, and the build's refusal of a stub above it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lockship.builder.errors import StubError
from lockship.builder.glibc import GlibcFloor, check_stub_glibc, environment_floor
from lockship.builder.inputs.lockfile import read_locked_environment

from tests.conftest import DEMO_PLATFORM
from tests.factories import write_stand_in_stub
from tests.runners import run_lockship


def test_the_locks_virtual_packages_come_first(tmp_path: Path) -> None:
    (tmp_path / "pixi.toml").write_text('[system-requirements]\nlibc = "2.31"\n')
    floor = environment_floor("linux-64", ["__unix", "__glibc=2.17"], ["__glibc >=2.28"], tmp_path)
    assert floor == GlibcFloor("2.17", "the lock's virtual packages")


@pytest.mark.parametrize(
    ("manifest", "name", "expected"),
    [
        ("pixi.toml", '[system-requirements]\nlibc = "2.31"\n', "2.31"),
        (
            "pixi.toml",
            '[system-requirements]\nlibc = { family = "glibc", version = "2.26" }\n',
            "2.26",
        ),
        ("pyproject.toml", '[tool.pixi.system-requirements]\nlibc = "2.34"\n', "2.34"),
    ],
)
def test_pixis_system_requirements(tmp_path: Path, manifest: str, name: str, expected: str) -> None:
    (tmp_path / manifest).write_text(name)
    floor = environment_floor("linux-aarch64", [], ["__glibc >=2.17"], tmp_path)
    assert floor == GlibcFloor(expected, f"{manifest}'s system-requirements")


def test_the_packages_dependencies_then_pixis_default(tmp_path: Path) -> None:
    depends = ["python >=3.11", "__glibc >=2.17,<3.0.a0", "__glibc >=2.28"]
    assert environment_floor("linux-64", [], depends, tmp_path) == GlibcFloor(
        "2.28", "the packages' __glibc dependencies"
    )
    assert environment_floor("linux-64", [], ["libzlib"], None) == GlibcFloor(
        "2.28", "pixi's default"
    )
    assert environment_floor("osx-arm64", [], ["__glibc >=2.17"], None) is None


V7_LOCK = """\
version: 7
platforms:
- name: linux-64
  virtual-packages:
  - __unix=0
  - __glibc=2.17
environments:
  default:
    channels:
    - url: http://127.0.0.1:1/
    packages:
      linux-64: []
packages: []
"""


def test_v7_lock_platform_virtual_packages_are_read(tmp_path: Path) -> None:
    (tmp_path / "pixi.lock").write_text(V7_LOCK)
    env = read_locked_environment(tmp_path / "pixi.lock", "default", "linux-64")
    assert env.virtual_packages == ("__unix=0", "__glibc=2.17")
    floor = environment_floor("linux-64", env.virtual_packages, [], tmp_path)
    assert floor == GlibcFloor("2.17", "the lock's virtual packages")


def test_a_stub_above_the_floor_is_refused_in_one_line(tmp_path: Path) -> None:
    stub = tmp_path / "lockship-stub-linux-64"
    floor = GlibcFloor("2.28", "pixi's default")
    with pytest.raises(StubError) as refused:
        check_stub_glibc("linux-64", stub, "2.35", floor, allow_newer=False)
    assert str(refused.value) == (
        f"the linux-64 stub {stub} needs glibc >= 2.35, but the environment runs on glibc "
        f"2.28 (pixi's default); build with the portable stub (leave out --stub and "
        f"--stub-dir, or lockship freeze-stub --portable) or pass --allow-newer-glibc"
    )
    check_stub_glibc("linux-64", stub, "2.35", floor, allow_newer=True)
    check_stub_glibc("linux-64", stub, "2.28", floor, allow_newer=False)
    check_stub_glibc("linux-64", stub, "2.17", floor, allow_newer=False)
    # numbers, not text: 2.9 is older than 2.28
    check_stub_glibc("linux-64", stub, "2.9", floor, allow_newer=False)
    check_stub_glibc("linux-64", stub, None, floor, allow_newer=False)


def _stub_needing(tmp_path: Path, glibc: str) -> Path:
    """A stand-in stub (the build never runs it) whose sidecar says it needs ``glibc``."""
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    facts = {"platform": DEMO_PLATFORM, "python": "3.11.2", "pyinstaller": "6", "stub": "0"}
    sidecar = {**facts, "size": stub.stat().st_size, "sha256": "0" * 64, "glibc": glibc}
    stub.with_name(stub.name + ".json").write_text(json.dumps(sidecar))
    return stub


@pytest.mark.skipif(DEMO_PLATFORM != "linux-64", reason="the demo lock is for linux-64 here")
def test_dry_run_states_both_and_a_stub_above_the_floor_fails_the_build(
    tmp_path: Path, demo_lock: Path
) -> None:
    stub = _stub_needing(tmp_path, "2.35")
    common = ["build", demo_lock, "--stub", stub, "--cache-dir", tmp_path / "c"]
    refused = run_lockship(*common, "-o", tmp_path / "out", "--dry-run")
    assert refused.returncode == 1
    assert len(refused.error_lines) == 1 and refused.error_lines[0].startswith(
        f"ERROR: the linux-64 stub {stub} needs glibc >= 2.35, but the environment runs on "
        "glibc 2.28 (pixi's default); "
    ), refused.stderr
    allowed = run_lockship(*common, "-o", tmp_path / "out", "--dry-run", "--allow-newer-glibc")
    assert allowed.returncode == 0, allowed.stderr
    assert (
        "glibc:        the installer needs >= 2.35; the environment's floor is 2.28 "
        "(pixi's default)" in allowed.stdout.splitlines()
    )
    (tmp_path / "b").mkdir()
    fitting = _stub_needing(tmp_path / "b", "2.17")
    fits = run_lockship(*common[:3], fitting, *common[4:], "-o", tmp_path / "out", "--dry-run")
    assert fits.returncode == 0, fits.stderr
    assert "glibc:        the installer needs >= 2.17;" in fits.stdout
    assert not (tmp_path / "out").exists()
