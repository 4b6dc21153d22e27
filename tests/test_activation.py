"""The activation scripts rattler generates for an installed prefix, and what making them may
not do: start a program (rattler's PowerShell starts ``pwsh``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lockship.stub.activation import (
    SYSTEM_PATH,
    activation_environment,
    env_file_text,
    scripts_doing_more,
    write_activation_env,
    write_activation_scripts,
)
from rattler import Subdir
from rattler.shell import ActivationVariables, Shell, activate

from tests.factories import write_marking_program
from tests.runners import run_installer


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


def _prefix_with_hooks(prefix: Path) -> Path:
    (prefix / "bin").mkdir(parents=True)
    hooks = prefix / "etc" / "conda"
    (hooks / "activate.d").mkdir(parents=True)
    (hooks / "env_vars.d").mkdir(parents=True)
    (hooks / "env_vars.d" / "tool.json").write_text('{"TOOL_MODE": "fast mode"}')
    (hooks / "activate.d" / "a-sets.sh").write_text(
        '# sets only\nexport TOOL_HOME="$CONDA_PREFIX/share/tool"\n'
        "TOOL_PLAIN=1\nexport TOOL_PLAIN\n"
    )
    (hooks / "activate.d" / "b-does-more.sh").write_text(
        'export TOOL_DATA="$CONDA_PREFIX/data"\nmkdir -p "$CONDA_PREFIX/made-by-activation"\n'
    )
    return prefix


def test_the_variables_activation_sets_are_evaluated(tmp_path: Path) -> None:
    prefix = _prefix_with_hooks(tmp_path / "env")

    variables = activation_environment(prefix, "linux-64", base_path="/usr/bin:/bin")

    assert variables == {
        "PATH": f"{prefix}/bin:/usr/bin:/bin",
        "CONDA_PREFIX": str(prefix),
        "CONDA_SHLVL": "1",
        "TOOL_MODE": "fast mode",
        "TOOL_HOME": f"{prefix}/share/tool",
        "TOOL_PLAIN": "1",
        "TOOL_DATA": f"{prefix}/data",
    }
    assert scripts_doing_more(prefix) == ["etc/conda/activate.d/b-does-more.sh"]


def test_activate_env_is_read_by_env_files(tmp_path: Path) -> None:
    """``KEY=VALUE`` lines with nothing to unquote: what docker's --env-file and systemd's
    EnvironmentFile= take as they are (here: ``env -i`` given the lines as words)."""
    prefix = _prefix_with_hooks(tmp_path / "env")
    (prefix / "bin" / "show").write_text('#!/bin/sh\necho "$TOOL_MODE|$TOOL_HOME|$CONDA_PREFIX"\n')
    (prefix / "bin" / "show").chmod(0o755)

    path = write_activation_env(prefix, "linux-64")

    lines = path.read_text().splitlines()
    assert lines == sorted(lines)
    assert f"PATH={prefix}/bin:{SYSTEM_PATH}" in lines
    shown = subprocess.run(["env", "-i", *lines, "show"], capture_output=True, text=True)
    assert shown.stdout.strip() == f"fast mode|{prefix}/share/tool|{prefix}"


def test_an_activate_d_script_that_exits_leaves_the_other_variables(tmp_path: Path) -> None:
    prefix = _prefix_with_hooks(tmp_path / "env")
    (prefix / "etc" / "conda" / "activate.d" / "c-exits.sh").write_text("exit 3\n")

    lines = write_activation_env(prefix, "linux-64").read_text().splitlines()

    assert lines[0].startswith("# the activate.d scripts' variables are missing: evaluating")
    assert "TOOL_MODE=fast mode" in lines and f"CONDA_PREFIX={prefix}" in lines
    assert not any(line.startswith("TOOL_HOME=") for line in lines)


def test_a_value_with_a_line_break_is_left_out() -> None:
    assert env_file_text({"B": "two\nlines", "A": "x=y"}) == "A=x=y\n"


def test_windows_variables_come_from_the_cmd_script(tmp_path: Path) -> None:
    prefix = _prefix_with_hooks(tmp_path / "env")

    variables = activation_environment(prefix, "win-64", base_path="C:\\Windows")

    assert variables["TOOL_MODE"] == "fast mode"
    assert variables["CONDA_PREFIX"] == str(prefix)
    assert variables["PATH"].startswith(f"{prefix};") and variables["PATH"].endswith(";C:\\Windows")
    assert "TOOL_HOME" not in variables  # activate.d batch files are not run


@pytest.mark.e2e
def test_an_installation_writes_activate_env(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix)
    assert run.returncode == 0, run.stderr

    lines = (prefix / "activate.env").read_text().splitlines()

    assert f"CONDA_PREFIX={prefix}" in lines
    assert "LSDEMO_ACTIVATED=yes" in lines
    hello = subprocess.run(["env", "-i", *lines, "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"
