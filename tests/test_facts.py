"""The stub cache key: what decides a freeze, and the toolchain that freezes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lockship import stub
from lockship.builder.stubs import facts
from lockship.builder.stubs.facts import cached_stub_path, freeze_inputs, stub_identity, toolchain

TOOLS = toolchain()


def test_the_toolchain_is_part_of_the_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = cached_stub_path(tmp_path, "linux-64")
    identity = stub_identity()
    for tool, other in (("python", "3.99.0"), ("pyinstaller", "99.0"), ("py-rattler", "0.99")):
        with monkeypatch.context() as patch:
            patch.setattr(facts, "toolchain", lambda t=tool, o=other: {**TOOLS, t: o})
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
    """Editing the cache-folder helpers (or the lookup) must not invalidate every stub; every
    other file of the stub folders is hashed without being listed."""
    root = Path(stub.__file__).parent.parent
    names = {p.relative_to(root).as_posix() for p in freeze_inputs()}
    on_disk = {
        p.relative_to(root).as_posix()
        for folder in (root / "stub", root / "builder" / "stubs")
        for p in folder.rglob("*")
        if p.suffix in (".py", ".c", ".h") and "__pycache__" not in p.parts
    }
    assert names == on_disk - {"builder/stubs/facts.py", "builder/stubs/lookup.py"}
    assert {"stub/cli.py", "stub/shared/payload.py", "builder/stubs/freeze.py"} <= names
    assert {"builder/stubs/pack.py", "builder/stubs/native/lockship-unpack.c"} <= names
    assert "builder/stubs/native/windows/lockship-launch.c" in names
