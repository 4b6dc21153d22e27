"""The portable linux stub: every ELF file needs glibc <= 2.17, and freezes do not depend on
where the checkout, the Python and the cache lie."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lockship.builder.paths import default_cache_dir
from lockship.builder.stubs.elf import ELF_MAGIC, glibc_versions
from lockship.builder.stubs.facts import stub_facts
from lockship.builder.stubs.pack import unpack
from lockship.builder.stubs.portable import PORTABLE_GLIBC, portable_supported

from tests.conftest import DEMO_PLATFORM
from tests.runners import REPO_ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not portable_supported(DEMO_PLATFORM), reason=f"no portable stub for {DEMO_PLATFORM}"
    ),
]


@pytest.fixture(scope="module")
def portable_stub(frozen_stub: Path) -> Path:
    """The stub ``lockship build`` uses by default here: the portable one."""
    if os.environ.get("LOCKSHIP_TEST_STUB") == "python" and not os.environ.get("CI"):
        pytest.skip("LOCKSHIP_TEST_STUB=python: the e2e stub is not frozen")
    return frozen_stub


def newest_glibc(path: Path) -> tuple[int, ...] | None:
    return max(glibc_versions(path.read_bytes()), default=None)


def test_every_elf_file_needs_at_most_glibc_2_17(portable_stub: Path, tmp_path: Path) -> None:
    facts = stub_facts(portable_stub)
    assert facts is not None and facts.glibc == PORTABLE_GLIBC["linux-64"] == "2.17", facts
    assert facts.python.startswith("3.11.") and facts.platform == DEMO_PLATFORM
    program = unpack(portable_stub, tmp_path / "unpacked")
    elves = [
        p
        for p in (tmp_path / "unpacked").rglob("*")
        if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == ELF_MAGIC
    ]
    needs = {p.relative_to(tmp_path).as_posix(): newest_glibc(p) for p in elves}
    # the unpacker, the program, libpython (with zlib and libffi inside), rattler
    assert program in elves and (tmp_path / "unpacked" / "unpack") in elves
    assert any("libpython3.11" in name for name in needs)
    assert any(name.endswith("rattler.abi3.so") for name in needs)
    assert all(v is not None and v <= (2, 17) for v in needs.values()), needs
    # every glibc system has libgcc_s; the build machine's may need a newer glibc (2.35 here)
    assert not [p.name for p in elves if p.name.startswith("libgcc_s")]
    # nothing compiled in names the folder the Python was built in (a Python built in another
    # cache folder is then the same): not its sources (__FILE__), not configure's (VPATH)
    built_in = str(default_cache_dir() / "portable").encode()
    assert not [p.name for p in elves if built_in in p.read_bytes()]
    started = subprocess.run([program, "--help"], capture_output=True, text=True, check=False)
    assert started.returncode == 0 and "usage: lockship-stub" in started.stdout, started.stderr


#: run in a fresh interpreter: lockship from another checkout's folders, freezing with another
#: cache folder
_FREEZE_ELSEWHERE = """\
import importlib.util, sys, types
from pathlib import Path

checkout, cache, output = map(Path, sys.argv[1:4])
namespace = types.ModuleType("lockship")
namespace.__path__ = []
sys.modules["lockship"] = namespace
for name in ("stub", "builder"):
    spec = importlib.util.spec_from_file_location(
        f"lockship.{name}", checkout / name / "__init__.py",
        submodule_search_locations=[str(checkout / name)],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    setattr(namespace, name, module)
from lockship.builder.stubs.portable import freeze_portable_stub

freeze_portable_stub(output, lambda line: print(line, file=sys.stderr), cache_dir=cache)
"""


def test_freezes_from_other_paths_are_byte_identical(portable_stub: Path, tmp_path: Path) -> None:
    """The cached stub came from this checkout and cache; freeze again from copies of both
    (a longer path, another checkout folder, another Python folder, another site folder)."""
    cache = default_cache_dir()
    elsewhere = tmp_path / "somewhere" / "quite" / "different"
    moved = elsewhere / "cache"
    for name in ("sources", "unpackers", "tools"):
        if (cache / name).is_dir():
            shutil.copytree(cache / name, moved / name, symlinks=True)
    for made in (cache / "portable").glob(f"*/*-{DEMO_PLATFORM}*"):  # the Python, its site
        target = moved / made.relative_to(cache)
        shutil.copytree(made, target, symlinks=True)
    checkout = elsewhere / "checkout"
    for name in ("builder", "stub"):
        shutil.copytree(
            REPO_ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    output = elsewhere / "out" / portable_stub.name
    frozen = subprocess.run(
        [sys.executable, "-c", _FREEZE_ELSEWHERE, checkout, moved, output],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        cwd=elsewhere,
    )
    assert frozen.returncode == 0, frozen.stderr
    # nothing was built again: the copied Python was found by its key
    assert "making the portable" in frozen.stderr and "Compiling" not in frozen.stderr
    assert output.read_bytes() == portable_stub.read_bytes()
    assert stub_facts(output) == stub_facts(portable_stub)
