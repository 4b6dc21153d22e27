"""The activation scripts rattler generates for an installed prefix, and what making them may
not do: start a program (rattler's PowerShell starts ``pwsh``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lockship.stub.activation import write_activation_scripts
from rattler import Subdir
from rattler.shell import ActivationVariables, Shell, activate

from tests.factories import write_marking_program


@pytest.mark.skipif(os.name != "posix", reason="a POSIX shell script stands in for pwsh")
def test_rattler_alone_starts_pwsh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the installer hides PATH from it: rattler runs ``pwsh -v`` to pick an executable.
    (If this fails, py-rattler stopped doing so, and ``no_programs_on_path`` can go.)"""
    mark = write_marking_program(tmp_path / "bin", "pwsh")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    activate(tmp_path, ActivationVariables(), Shell.powershell, platform=Subdir("linux-64"))
    assert mark.read_text().split() == ["-v"]


@pytest.mark.skipif(os.name != "posix", reason="a POSIX shell script stands in for pwsh")
def test_writing_the_scripts_starts_no_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = write_marking_program(tmp_path / "bin", "pwsh")
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path)
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)

    written = write_activation_scripts(prefix, "linux-64")

    assert [p.name for p in written] == ["activate.sh", "activate.fish", "activate.ps1"]
    assert not mark.exists()
    assert os.environ["PATH"] == path
    ps1 = (prefix / "activate.ps1").read_text()
    assert str(prefix / "bin") in ps1 and "$Env:PATH" in ps1
    activated = subprocess.run(
        ["sh", "-c", f'. "{prefix}/activate.sh" && echo "$PATH"'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert activated.stdout.strip() == f"{prefix}/bin:/usr/bin:/bin"
