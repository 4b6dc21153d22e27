"""Building PyPI sources into wheels: a build backend that hangs is given up, with its log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lockship.builder.inputs.model import LockedSource
from lockship.builder.pypi import sdist
from lockship.builder.pypi.sdist import SourceBuildError, build_wheel

PYPROJECT = """\
[build-system]
requires = []
build-backend = "stuck"
backend-path = ["."]

[project]
name = "stuck"
version = "1.0"
"""

STUCK = """\
import time


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    print("building for ever", flush=True)
    time.sleep(120)
"""


def test_a_hanging_build_backend_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "stuck"
    tree.mkdir()
    (tree / "pyproject.toml").write_text(PYPROJECT)
    (tree / "stuck.py").write_text(STUCK)
    monkeypatch.setattr(sdist, "BUILD_TIMEOUT", 3)
    source = LockedSource("stuck", "1.0", "./stuck", None, "path")
    log = tmp_path / "logs" / "stuck.log"
    started = time.monotonic()
    with pytest.raises(SourceBuildError) as caught:
        build_wheel(source, tree, tmp_path / "wheels", log)
    assert time.monotonic() - started < 60
    assert str(caught.value) == (
        "building a wheel of stuck 1.0 (./stuck) failed: its build backend took longer than "
        f"3 s; the full log is {log}"
    )
    assert "building for ever" in log.read_text()
    assert not (tmp_path / "wheels").exists()
