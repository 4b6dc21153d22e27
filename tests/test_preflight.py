"""preflight in process: every check that fails before the prefix exists, the plan it hands
to the destination, and the disk budget of each staging route."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from lockship.stub.errors import InstallError, PrefixError
from lockship.stub.finish import write_marker
from lockship.stub.preflight import (
    SPACE_EXTRA,
    WORKERS_ENV,
    DiskSpaceError,
    InstallPlan,
    InstallRequest,
    UpdateRefused,
    check_disk_space,
    preflight,
    required_space,
    worker_count,
)
from lockship.stub.shared.manifest import Manifest
from lockship.stub.system import SystemRequirementError, check_virtual_packages

from tests.factories import core_manifest, locked_package, write_conda_package

NO_DISK_CHECK = {"LOCKSHIP_SKIP_DISK_CHECK": "1"}


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    archive = write_conda_package(tmp_path / "channel", "alpha", "1.0", files={"a.txt": "a"})
    return core_manifest([locked_package(archive)[0]])


def test_worker_count() -> None:
    cores = min(os.cpu_count() or 1, 8)
    assert worker_count({}, "linux") == cores
    assert worker_count({}, "darwin") == 0
    assert worker_count({}, "win32") == 0
    assert worker_count({WORKERS_ENV: "0"}, "linux") == 0
    assert worker_count({WORKERS_ENV: "3"}, "linux") == 3
    assert worker_count({WORKERS_ENV: "64"}, "linux") == 64
    assert worker_count({WORKERS_ENV: "3"}, "darwin") == 0  # forking is Linux-only
    for bad in ("many", "-1", "65", ""):
        message = f"{WORKERS_ENV} must be a number from 0 to 64, not {bad!r}"
        with pytest.raises(InstallError, match=f"^{re.escape(message)}$"):
            worker_count({WORKERS_ENV: bad}, "linux")


def test_a_bad_worker_count_fails_before_the_prefix_exists(
    tmp_path: Path, manifest: Manifest
) -> None:
    prefix = tmp_path / "env"
    with pytest.raises(InstallError, match=f"^{WORKERS_ENV} must be a number"):
        preflight(manifest, InstallRequest(prefix=prefix), environ={WORKERS_ENV: "lots"})
    assert not prefix.exists()


def test_the_plan_carries_the_route(tmp_path: Path, manifest: Manifest) -> None:
    request = InstallRequest(prefix=tmp_path / "env")
    environ = {**NO_DISK_CHECK, WORKERS_ENV: "2"}
    assert preflight(manifest, request, environ=environ, platform="linux") == InstallPlan(
        manifest, request, workers=2
    )
    assert preflight(manifest, request, environ=environ, platform="darwin").workers == 0
    assert not (tmp_path / "env").exists()


def test_the_disk_budget_counts_archive_copies_only_on_the_copy_route(manifest: Manifest) -> None:
    assert manifest.installed_size == 4 * manifest.total_size  # as core_manifest makes it
    unpacked_only = int(manifest.installed_size * 1.10) + SPACE_EXTRA
    assert required_space(manifest, copies=False) == unpacked_only
    with_copies = int((manifest.installed_size + manifest.total_size) * 1.10) + SPACE_EXTRA
    assert required_space(manifest, copies=True) == with_copies


def test_not_enough_disk_space(tmp_path: Path) -> None:
    prefix = tmp_path / "not" / "yet" / "env"
    needed = 10**18
    with pytest.raises(DiskSpaceError) as caught:
        check_disk_space(prefix, needed)
    assert caught.value.needed == needed
    assert str(caught.value).startswith(
        f"not enough free disk space for {prefix}: needs 1000000000000.0 MB, "
    )
    assert str(caught.value).endswith(" free; free some space or choose another prefix")


def test_a_full_prefix_is_refused_unless_forced(tmp_path: Path, manifest: Manifest) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "x").write_text("x")
    with pytest.raises(PrefixError, match="exists and is not empty"):
        preflight(manifest, InstallRequest(prefix=prefix), environ=NO_DISK_CHECK)
    preflight(manifest, InstallRequest(prefix=prefix, force=True), environ=NO_DISK_CHECK)


def test_update_needs_a_prefix_of_the_same_installer(tmp_path: Path, manifest: Manifest) -> None:
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    update = InstallRequest(prefix=prefix, update=True)
    with pytest.raises(UpdateRefused, match="was not made by a lockship installer, so -u"):
        preflight(manifest, update, environ=NO_DISK_CHECK)
    write_marker(prefix, manifest)
    assert preflight(manifest, update, environ=NO_DISK_CHECK).request == update
    marker = prefix / "conda-meta" / "lockship"
    marker.write_text(json.dumps({"name": "someone-else", "version": "9"}))
    with pytest.raises(UpdateRefused, match=f"^{re.escape(f'{prefix} holds someone-else 9, ')}"):
        preflight(manifest, update, environ=NO_DISK_CHECK)
    forced = InstallRequest(prefix=prefix, update=True, force=True)
    preflight(manifest, forced, environ=NO_DISK_CHECK)


def test_virtual_packages_against_given_machines() -> None:
    requirements = ["__glibc >=2.28", "__cuda >=12", "__osx >=11"]
    check_virtual_packages(
        requirements, detected={"__glibc": "2.36", "__cuda": "12.4", "__osx": "14.1"}
    )
    with pytest.raises(SystemRequirementError) as caught:
        check_virtual_packages(requirements, detected={"__glibc": "2.17", "__cuda": "12.0"})
    assert caught.value.problems == (
        "__glibc >=2.28 is required but this machine has __glibc 2.17 (CONDA_OVERRIDE_GLIBC)",
        "__osx >=11 is required but this machine has no __osx",
    )
    assert str(caught.value).endswith(
        "(if you know better, set CONDA_OVERRIDE_CUDA, CONDA_OVERRIDE_GLIBC, "
        "CONDA_OVERRIDE_OSX to override the detected values)"
    )
    check_virtual_packages([], detected={})


def test_preflight_checks_virtual_packages_first(tmp_path: Path, manifest: Manifest) -> None:
    needy = Manifest(**{**manifest.__dict__, "virtual_packages": ("__glibc >=99",)})
    prefix = tmp_path / "env"
    with pytest.raises(SystemRequirementError, match="__glibc >=99 is required"):
        preflight(needy, InstallRequest(prefix=prefix), detected={"__glibc": "2.36"})
    plan = preflight(
        needy, InstallRequest(prefix=prefix), environ=NO_DISK_CHECK, detected={"__glibc": "99.1"}
    )
    assert plan.manifest == needy and not prefix.exists()
