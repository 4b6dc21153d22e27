"""An installer's name and version: checked against conda's rules before they name a file or
reach a generated script, with the bad character and where the value came from in the error."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from lockship.builder.errors import UsageError
from lockship.builder.identity import check_name, check_version
from lockship.builder.output.installer import render_header
from lockship.builder.stubs.pack import PackLayout

from tests.factories import core_manifest, write_stand_in_stub
from tests.runners import Run, run_lockship


def one_error(run: Run, code: int = 2) -> str:
    assert run.returncode == code, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return run.error_lines[0]


@pytest.mark.parametrize("value", ["lsdemo", "My_App-2", "a.b+c", "9lives"])
def test_names_conda_allows_pass(value: str) -> None:
    assert check_name(value, "from --name") == value


@pytest.mark.parametrize("value", ["1.0", "1.0-rc.1", "2!1.0+cu121", "2024.12_1"])
def test_versions_conda_allows_pass(value: str) -> None:
    assert check_version(value, "from --version") == value


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("it's", '"\'"'),
        ("../../escaped", '"."'),  # a leading dot: the first character must be a letter or digit
        ("a/b", '"/"'),
        ("a\nb", "a newline"),
        ("my app", "a space"),
        ("$(id)", '"$"'),
        ("", "is empty"),
    ],
)
def test_bad_names_name_the_character_and_the_origin(value: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_name(value, "from --name")
    message = str(caught.value)
    assert named in message and "(from --name)" in message, message
    assert "\n" not in message


def test_bad_versions_are_refused_alike() -> None:
    with pytest.raises(UsageError, match=r'the version "1\\"2" \(from pixi.toml\) holds "\\""'):
        check_version('1"2', "from pixi.toml")


# --- at build time, as users meet it --------------------------------------------------------


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    return write_stand_in_stub(tmp_path / "stand-in-stub")


def test_a_name_with_a_quote_is_refused_before_anything_is_written(
    tmp_path: Path, demo_lock: Path, stub: Path
) -> None:
    out = tmp_path / "a" / "b" / "out"
    common = ["--stub", stub, "--cache-dir", tmp_path / "cache", "-o", out]
    line = one_error(run_lockship("build", demo_lock, "--name", "it's", *common))
    assert line.startswith('ERROR: the name "it\'s" (from --name) holds "\'"')
    line = one_error(run_lockship("build", demo_lock, "--version", '1"2', *common))
    assert 'holds "\\""' in line and "(from --version)" in line
    line = one_error(run_lockship("build", demo_lock, "--name", "../../escaped", *common))
    assert "../../escaped" in line
    assert not (tmp_path / "a").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stand-in-stub"]


def test_a_newline_in_the_workspace_name_is_refused(
    tmp_path: Path, demo_lock: Path, stub: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "pixi.lock").write_bytes((demo_lock / "pixi.lock").read_bytes())
    (workspace / "pixi.toml").write_text('[workspace]\nname = "a\\ntouch pwned"\nversion = "1"\n')
    run = run_lockship(
        "build", workspace, "--stub", stub, "--cache-dir", tmp_path / "c", "-o", tmp_path / "o"
    )
    line = one_error(run)
    assert "holds a newline" in line and str(workspace / "pixi.toml") in line, line
    assert not (tmp_path / "o").exists()


# --- what is generated quotes every value ---------------------------------------------------


def test_the_header_cannot_run_a_value(tmp_path: Path) -> None:
    """A manifest from elsewhere (not checked): the header shows the values, never runs them."""
    manifest = dataclasses.replace(
        core_manifest([], platform="linux-64"), name="a\ntouch pwned1\n", version="$(touch pwned2)"
    )
    header = render_header(
        manifest, 'x"$(touch pwned3)`touch pwned4`.sh', PackLayout(600, 368), None
    )
    script = tmp_path / "header.sh"
    script.write_bytes(header)
    run = subprocess.run(["sh", script], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1 and "is damaged" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["header.sh"]
