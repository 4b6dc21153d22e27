"""The uninstaller written into each prefix: whatever the environment's name holds stays text."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from lockship.stub.uninstaller import write_uninstaller

from tests.factories import core_manifest

HOSTILE = 'it\'s $(touch pwned1) `touch pwned2` "%PATH%" & echo\ntouch pwned3'


def test_uninstall_sh_shows_a_hostile_name_and_runs_none_of_it(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "conda-meta" / "lockship").write_text("{}")
    manifest = dataclasses.replace(core_manifest([], platform="linux-64"), name=HOSTILE)
    script = write_uninstaller(prefix, manifest)
    run = subprocess.run(
        ["sh", script], cwd=tmp_path, input="n\n", capture_output=True, text=True, check=False
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith(f"Remove the {HOSTILE} environment {prefix} and everything")
    assert "Nothing removed." in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env"]
    assert prefix.is_dir()


def test_uninstall_bat_keeps_a_hostile_name_inside_its_quotes(tmp_path: Path) -> None:
    manifest = dataclasses.replace(core_manifest([], platform="win-64"), name=HOSTILE)
    text = write_uninstaller(tmp_path, manifest).read_bytes().decode()
    lines = text.split("\r\n")
    assert lines[1].startswith(
        "rem Removes the it's $(touch pwned1) `touch pwned2` %%PATH%% & echo?"
    )
    (prompt,) = [line for line in lines if "set /p" in line]
    assert prompt.count('"') == 2 and "%%PATH%%" in prompt
    # -b and --batch both skip the question; an earlier answer is never reused
    assert 'if /i "%~1"=="--batch" set "BATCH=1"' in lines
    assert lines.index('set "ANSWER="') < lines.index(prompt)
