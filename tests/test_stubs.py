"""The stub cache key: what decides a freeze, and the toolchain that freezes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lockship.builder import stubs
from lockship.builder.stubs import cached_stub_path, freeze_inputs, stub_identity, toolchain

TOOLS = toolchain()


def test_the_toolchain_is_part_of_the_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = cached_stub_path(tmp_path, "linux-64")
    identity = stub_identity()
    for tool, other in (("python", "3.99.0"), ("pyinstaller", "99.0"), ("py-rattler", "0.99")):
        with monkeypatch.context() as patch:
            patch.setattr(stubs, "toolchain", lambda t=tool, o=other: {**TOOLS, t: o})
            assert cached_stub_path(tmp_path, "linux-64") != before, tool
            # what the sidecar records stays comparable across machines
            assert stub_identity() == identity
    assert cached_stub_path(tmp_path, "linux-64") == before


def test_the_toolchain_names_the_installed_versions() -> None:
    import platform
    from importlib.metadata import version

    expected = {
        "python": platform.python_version(),
        "pyinstaller": version("pyinstaller"),
        "py-rattler": version("py-rattler"),
    }
    assert toolchain() == expected


def test_only_what_decides_the_freeze_is_hashed() -> None:
    """Editing the cache-folder helpers (or this module) must not invalidate every stub."""
    names = {(p.parent.name, p.name) for p in freeze_inputs()}
    assert ("builder", "freeze.py") in names and ("builder", "elf.py") in names
    assert ("stub", "cli.py") in names
    assert {n for parent, n in names if parent == "builder"} == {
        "freeze.py",
        "elf.py",
        "stubpack.py",
        "portable.py",
    }
    assert {n for parent, n in names if parent == "native"} == {
        "lockship-unpack.c",
        "lockship-unpack.h",
        "lockship-tar.c",
        "lockship-sweep.c",
    }
