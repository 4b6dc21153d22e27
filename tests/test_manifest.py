"""What an update keeps, the rules the installer follows and delta builds rely on:
``kept_on_update`` for conda packages, ``plan_wheels`` for wheels."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import rattler
from lockship.stub.shared.manifest import (
    LinkedPackage,
    PackageInfo,
    WheelPlan,
    kept_on_update,
    plan_wheels,
)

from tests.factories import locked_package, write_conda_package
from tests.factories import package_entry as info


def linked(*packages: PackageInfo) -> list[LinkedPackage]:
    return [LinkedPackage.of(p) for p in packages]


# --- kept_on_update ----------------------------------------------------------------------------


def test_a_package_with_the_same_name_and_content_is_kept_and_nothing_else() -> None:
    lib, tool, gone = info("lib", "1", "a"), info("tool", "1", "b"), info("gone", "1", "c")
    new = [lib, info("tool", "2", "d"), info("added", "1", "e")]
    assert kept_on_update(linked(lib, tool, gone), new) == {"noarch/lib-1-0.conda"}


def test_the_same_sha256_under_another_file_name_is_kept() -> None:
    # rattler pairs packages by name and compares their content, not their file names
    old = info("lib", "1", "a")
    renamed = PackageInfo(**{**info("lib", "1", "a").__dict__, "entry": "noarch/lib-1-0.tar.bz2"})
    assert kept_on_update(linked(old), [renamed]) == {"noarch/lib-1-0.tar.bz2"}


def test_a_package_without_a_known_sha256_is_never_kept() -> None:
    lib = info("lib", "1", "a")
    unhashed = LinkedPackage("lib", "1", None, "m1")
    assert kept_on_update([unhashed], [lib]) == frozenset()


def test_an_md5_gained_lost_or_changed_makes_a_package_changed() -> None:
    # rattler compares the md5 too (older versions: whether there is one); keep no more than it
    lib = info("lib", "1", "a")
    for md5 in (None, "m2"):
        assert kept_on_update([LinkedPackage("lib", "1", "a", md5)], [lib]) == frozenset()
    without = PackageInfo(**{**lib.__dict__, "record": {}})
    assert kept_on_update(linked(lib), [without]) == frozenset()
    assert kept_on_update(linked(without), [without]) == {"noarch/lib-1-0.conda"}


def test_a_new_python_minor_version_relinks_the_noarch_python_packages() -> None:
    pure, generic = info("pure", "1", "d", noarch="python"), info("generic", "1", "e")
    old = linked(info("python", "3.11.0", "a"), pure, generic)
    minor = kept_on_update(old, [info("python", "3.12.0", "b"), pure, generic])
    assert minor == {"noarch/generic-1-0.conda"}
    patch = kept_on_update(old, [info("python", "3.11.1", "c"), pure, generic])
    assert patch == {"noarch/pure-1-0.conda", "noarch/generic-1-0.conda"}
    # python added (or removed) counts as a change of version
    added = kept_on_update(linked(pure, generic), [info("python", "3.11.0", "a"), pure, generic])
    assert added == {"noarch/generic-1-0.conda"}


def test_rattler_records_read_like_the_manifest_describes_them(tmp_path: Path) -> None:
    """A record rattler reads, as ``conda-meta`` or a lock holds it, compares equal to the
    manifest entry the builder made of the same archive."""
    archive = write_conda_package(tmp_path, "lib", "1.0", files={"share/lib.txt": "lib\n"})
    package, blob = locked_package(archive)
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(archive))
    assert LinkedPackage.of_record(record) == LinkedPackage.of(package)  # neither has an md5
    record.md5 = hashlib.md5(blob).digest()
    package = replace(package, record=json.loads(record.to_json()))
    from_record = LinkedPackage.of_record(record)
    assert from_record == LinkedPackage.of(package)
    assert (from_record.sha256, from_record.md5) == (
        hashlib.sha256(blob).hexdigest(),
        hashlib.md5(blob).hexdigest(),
    )
    assert kept_on_update([from_record], [package]) == {package.entry}


# --- plan_wheels -------------------------------------------------------------------------------


def test_an_update_keeps_unchanged_wheels_and_removes_replaced_and_dropped_ones() -> None:
    previous = {"a-1-py3-none-any.whl": "sa", "b-1-py3-none-any.whl": "sb", "gone.whl": "sg"}
    wanted = [
        ("pypi/b-2-py3-none-any.whl", "sb2"),
        ("pypi/a-1-py3-none-any.whl", "sa"),
        ("pypi/new-1-py3-none-any.whl", "sn"),
    ]
    assert plan_wheels(previous, wanted, force=False) == WheelPlan(
        keep=frozenset({"a-1-py3-none-any.whl"}),
        remove=("b-1-py3-none-any.whl", "gone.whl"),
        install=("pypi/b-2-py3-none-any.whl", "pypi/new-1-py3-none-any.whl"),
    )


def test_the_same_file_name_with_another_sha256_is_replaced() -> None:
    plan = plan_wheels({"a.whl": "old"}, [("pypi/a.whl", "new")], force=False)
    assert plan == WheelPlan(frozenset(), ("a.whl",), ("pypi/a.whl",))


def test_force_reinstalls_every_wheel() -> None:
    plan = plan_wheels({"a.whl": "sa", "b.whl": "sb"}, [("pypi/a.whl", "sa")], force=True)
    assert plan == WheelPlan(frozenset(), ("a.whl", "b.whl"), ("pypi/a.whl",))


def test_an_unknown_sha256_never_keeps_a_wheel() -> None:
    assert plan_wheels({"a.whl": None}, [("pypi/a.whl", None)], force=False) == WheelPlan(
        frozenset(), ("a.whl",), ("pypi/a.whl",)
    )
    assert plan_wheels({"a.whl": "sa"}, [("pypi/a.whl", None)], force=False).keep == frozenset()


def test_a_first_install_installs_every_wheel_in_order() -> None:
    wanted = [("pypi/z.whl", "sz"), ("pypi/a.whl", "sa")]
    assert plan_wheels({}, wanted, force=False) == WheelPlan(
        frozenset(), (), ("pypi/z.whl", "pypi/a.whl")
    )
