"""lockship as users get it: the wheel (and sdist) built from this tree, installed with pip into a
fresh virtual environment, builds and runs the demo installer.

Slow: pip downloads lockship's dependencies from the index into the new environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from lockship import stub

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
VERSION = stub.__version__
NOT_SHIPPED = (
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "installers",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
)
PIP_WHEEL = ("-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check")
#: Files the installed package needs at run time besides its modules.
#: the stub's native sources among them: a pip-installed builder compiles the unpacker (and on
#: Windows the launcher) when it freezes a stub
SOURCE_DATA = (
    "builder/output/templates/header.sh.j2",
    "builder/stubs/native/lockship-unpack.c",
    "builder/stubs/native/lockship-unpack.h",
    "builder/stubs/native/windows/lockship-launch.c",
    "builder/stubs/native/windows/lockship-launch.h",
    "builder/py.typed",
    "stub/py.typed",
)
#: the same files in the wheel
PACKAGE_DATA = tuple(f"lockship/{name}" for name in SOURCE_DATA)
#: every package of the checkout (a folder of builder/ or stub/ with an __init__.py), by import name
PACKAGES = sorted(
    "lockship." + ".".join(init.parent.relative_to(REPO).parts)
    for top in ("builder", "stub")
    for init in (REPO / top).rglob("__init__.py")
)


def _env() -> dict[str, str]:
    """This environment without anything that would make the new venv see this checkout."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LOCKSHIP_STUB_DIR", "LOCKSHIP_CACHE_DIR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(
    command: Sequence[str | Path], *, cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _ok(process: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert process.returncode == 0, (
        f"{' '.join(map(str, process.args))} exited {process.returncode}\n"
        f"--- stdout\n{process.stdout}\n--- stderr\n{process.stderr}"
    )
    return process


def _venv_bin(venv: Path) -> Path:
    return venv / ("Scripts" if sys.platform == "win32" else "bin")


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout without build leftovers, so the build starts clean."""
    tree = tmp_path_factory.mktemp("source") / "lockship"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(*NOT_SHIPPED))
    return tree


@pytest.fixture(scope="module")
def wheel(source_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _ok(
        _run(
            [sys.executable, *PIP_WHEEL, "-w", out, source_tree],
            cwd=out,
        )
    )
    (built,) = out.glob("lockship-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment (no system site-packages) with the wheel pip-installed."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=base))
    python = _venv_bin(venv) / "python"
    _ok(
        _run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", wheel],
            cwd=base,
            timeout=1200,
        )
    )
    return venv


def test_every_package_is_listed_for_the_build_backend() -> None:
    """The backend maps builder/ and stub/ by hand, so it installs only the packages listed:
    a subpackage left off the list would be missing from the wheel."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(listed) == PACKAGES
    assert {"lockship.builder.stubs", "lockship.stub.shared"} <= set(PACKAGES)


def test_wheel_holds_the_packages_their_data_and_the_command(wheel: Path) -> None:
    assert wheel.name.startswith(f"lockship-{VERSION}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"lockship-{VERSION}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    for name in PACKAGE_DATA:
        assert name in names, f"{wheel.name} lacks {name}"
    for package in PACKAGES:
        init = package.replace(".", "/") + "/__init__.py"
        assert init in names, f"{wheel.name} lacks {init}"
    assert {
        "lockship/builder/cli.py",
        "lockship/stub/__init__.py",
        "lockship/stub/__main__.py",
    } <= names
    # nothing at the top of site-packages but lockship/ (no "builder" or "stub" to collide)
    assert {n.split("/")[0] for n in names} == {"lockship", f"lockship-{VERSION}.dist-info"}
    assert "lockship = lockship.builder.cli:entry" in entry_points.replace("  ", " ")
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nRequires-Dist: py-rattler" in metadata


def test_sdist_builds_the_same_wheel(
    source_tree: Path, wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("sdist")
    # Asked from a neutral folder: a checkout's build/ folder would pass for the package.
    probe = _run([sys.executable, "-c", "import build.__main__"], cwd=out)
    if probe.returncode != 0:
        pytest.skip("the sdist check needs PyPA's build (pip install build); not installed")
    _ok(_run([sys.executable, "-m", "build", "--sdist", "--outdir", out, source_tree], cwd=out))
    (sdist,) = out.glob("lockship-*.tar.gz")
    assert sdist.name == f"lockship-{VERSION}.tar.gz"
    top = f"lockship-{VERSION}"
    with tarfile.open(sdist) as archive:
        members = {m.name.removeprefix(f"{top}/") for m in archive.getmembers()}
    for name in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO", *SOURCE_DATA):
        assert name in members, f"{sdist.name} lacks {name}"

    # The sdist is complete: the wheel built from it has the same files as the one from the tree.
    rebuilt = tmp_path_factory.mktemp("wheel-from-sdist")
    _ok(
        _run(
            [sys.executable, *PIP_WHEEL, "-w", rebuilt, sdist],
            cwd=rebuilt,
        )
    )
    (from_sdist,) = rebuilt.glob("lockship-*.whl")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(from_sdist) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


def test_installed_lockship_runs_from_the_venv(venv: Path, tmp_path: Path) -> None:
    bin_dir = _venv_bin(venv)
    where = _ok(
        _run(
            [
                bin_dir / "python",
                "-c",
                "import lockship.builder, lockship.stub; print(lockship.builder.__file__)",
            ],
            cwd=tmp_path,
        )
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve())

    version = _ok(_run([bin_dir / "lockship", "--version"], cwd=tmp_path))
    assert version.stdout.strip() == f"lockship {VERSION}"

    help_text = _ok(_run([bin_dir / "lockship", "build", "--help"], cwd=tmp_path)).stdout
    assert help_text.startswith("usage: lockship build")
    for option in ("--environment", "--platform", "--output-dir", "--stub", "--cache-dir"):
        assert option in help_text


@pytest.mark.skipif(sys.platform != "linux", reason="the demo channel and .sh installers are Linux")
def test_installed_lockship_builds_the_demo_installer(
    venv: Path, demo_lock: Path, frozen_stub: Path, tmp_path: Path
) -> None:
    out, cache, prefix = tmp_path / "out", tmp_path / "cache", tmp_path / "prefix"
    lockship = _venv_bin(venv) / "lockship"
    command = [lockship, "build", demo_lock, "--stub", frozen_stub, "-o", out, "--cache-dir", cache]
    build = _ok(_run(command, cwd=tmp_path))
    installer = Path(build.stdout.strip().splitlines()[-1])
    assert installer.parent == out
    assert installer.is_file()

    _ok(_run(["bash", installer, "-b", "-p", prefix], cwd=tmp_path))
    hello = _ok(_run([prefix / "bin" / "lsdemo-hello"], cwd=tmp_path))
    assert hello.stdout == f"lsdemo-hello from {prefix}\n"
