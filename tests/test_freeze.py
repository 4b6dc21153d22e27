"""Freezing the stub: failures of PyInstaller are one line (the freeze itself runs in the
end-to-end tests, through the ``frozen_stub`` fixture)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from lockship.builder.errors import StubError
from lockship.builder.stubs import freeze, tools

REAL_RUN = subprocess.run


def only_pyinstaller(fake: Any) -> Any:
    """``fake`` for PyInstaller runs; other commands (PyInstaller's own ``ldd``) run for real."""

    def run(command: list[str], **kwargs: Any) -> Any:
        if command[1:3] == ["-m", "PyInstaller"]:
            return fake(command, **kwargs)
        return REAL_RUN(command, **kwargs)

    return run


def test_a_hanging_pyinstaller_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(command: list[str], **kwargs: Any) -> None:
        seen.update(kwargs)
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(tools.subprocess, "run", only_pyinstaller(run))
    with pytest.raises(StubError, match=r"took longer than 1800 s"):
        freeze.freeze_stub(tmp_path / "stub")
    assert seen["timeout"] == freeze.FREEZE_TIMEOUT
    assert not (tmp_path / "stub").exists()


def test_a_failing_pyinstaller_names_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "lots\nof\nSyntaxError: oops\n")

    monkeypatch.setattr(tools.subprocess, "run", only_pyinstaller(run))
    with pytest.raises(StubError, match=r"with PyInstaller failed: SyntaxError: oops$"):
        freeze.freeze_stub(tmp_path / "stub")


@pytest.mark.e2e
def test_two_freezes_of_the_same_sources_are_byte_identical(tmp_path: Path) -> None:
    first = freeze.freeze_stub(tmp_path / "one" / "stub")
    second = freeze.freeze_stub(tmp_path / "two" / "stub")
    assert (tmp_path / "one" / "stub").read_bytes() == (tmp_path / "two" / "stub").read_bytes()
    assert first == second
