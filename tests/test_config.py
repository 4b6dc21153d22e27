"""Build settings in ``[tool.lockship]``: reading, validating, merging with the command line, and
``lockship build`` run with no arguments in a folder that holds them."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from lockship.builder.config import parse_table, read_config
from lockship.builder.errors import UsageError
from lockship.builder.options import declared, given_on_command_line
from lockship.builder.settings import (
    BUILD_COMMAND,
    LinkScripts,
    Settings,
    build_parser,
    describe_settings,
    merge_settings,
)
from lockship.stub.cli import _default_prefix
from lockship.stub.shared.manifest import InstallerOptions, Manifest
from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import write_stand_in_stub
from tests.runners import run_lockship

PLATFORM = DEMO_PLATFORM


def settings_for(folder: Path, *argv: str) -> Settings:
    args = build_parser().parse_args(["build", *argv])
    return merge_settings(given_on_command_line(args, Settings, BUILD_COMMAND), read_config(folder))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- reading ---------------------------------------------------------------------------------


def test_pixi_toml_table_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / "app" / "pixi.toml",
        '[workspace]\nname = "app"\n\n[tool.lockship]\nenvironment = "prod"\n'
        'platforms = ["linux-64", "win-64", "linux-64"]\noutput-dir = "dist"\n'
        'license = "LICENSE"\nlink-scripts = ["Foo", "bar"]\nno-pyc = true\n'
        'default-prefix = "~/apps/app"\nstubs = {linux-64 = "stubs/s"}\ntimeout = 5\n'
        'mirrors = {"https://conda.anaconda.org/conda-forge" = "https://m.example/cf"}\n',
    )
    config = read_config(tmp_path / "app" / "pixi.lock")
    assert config is not None and config.label == "pixi.toml [tool.lockship]"
    folder = tmp_path / "app"
    assert config.values == {
        "environment": "prod",
        "platforms": ("linux-64", "win-64"),
        "output_dir": folder / "dist",
        "license": folder / "LICENSE",
        "link_scripts": LinkScripts(allowed=("bar", "foo")),
        "pyc": False,
        "default_prefix": "~/apps/app",
        "stubs": {"linux-64": folder / "stubs" / "s"},
        "timeout": 5,
        "mirrors": {"https://conda.anaconda.org/conda-forge/": ["https://m.example/cf/"]},
    }


@pytest.mark.parametrize(
    ("name", "text", "label"),
    [
        ("pyproject.toml", '[tool.lockship]\nname = "x"\n', "pyproject.toml [tool.lockship]"),
        ("lockship.toml", 'name = "x"\n', "lockship.toml"),
        ("lockship.toml", '[tool.lockship]\nname = "x"\n', "lockship.toml [tool.lockship]"),
    ],
)
def test_other_files_holding_settings(tmp_path: Path, name: str, text: str, label: str) -> None:
    write(tmp_path / name, text)
    config = read_config(tmp_path / "conda-lock.yml")
    assert config is not None
    assert (config.label, config.values, config.path) == (label, {"name": "x"}, tmp_path / name)


def test_no_table_means_no_settings(tmp_path: Path) -> None:
    write(tmp_path / "pixi.toml", '[workspace]\nname = "app"\n')
    write(tmp_path / "pyproject.toml", "[tool.ruff]\nline-length = 99\n")
    assert read_config(tmp_path) is None
    assert read_config(tmp_path / "missing" / "pixi.lock") is None


def test_settings_in_two_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "pixi.toml", '[tool.lockship]\nname = "a"\n')
    write(tmp_path / "lockship.toml", 'name = "b"\n')
    with pytest.raises(UsageError) as raised:
        read_config(tmp_path)
    assert str(raised.value) == (
        f"lockship settings in both {tmp_path / 'lockship.toml'} and {tmp_path / 'pixi.toml'}; "
        "keep them in one file"
    )


def test_unknown_key_suggests_the_closest_and_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "pixi.toml"
    with pytest.raises(UsageError) as raised:
        parse_table({"platfroms": ["linux-64"]}, path, "pixi.toml [tool.lockship]")
    assert str(raised.value) == (
        f"unknown key 'platfroms' in pixi.toml [tool.lockship] ({path}) (did you mean "
        f"'platforms'?); valid keys: {', '.join(str(d.key) for d in declared(Settings) if d.key)}"
    )
    assert raised.value.exit_code == 2
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timeout", "30", "an integer (seconds), not a string"),
        ("timeout", True, "an integer (seconds), not a boolean"),
        ("platforms", "linux-64", 'a list of platforms, or "all", not a string'),
        ("link-scripts", "no", "true, false or a list of package names, not a string"),
        ("no-pyc", 1, "true or false, not an integer"),
        ("stubs", ["a"], 'a table of platform = "path", not an array'),
        ("categories", ["main", 3], "a list of strings, not an integer (3)"),
        (
            "mirrors",
            {"https://a": [""]},
            'a table of "URL" = ["mirror URL", ...], not a string (\'\')',
        ),
    ],
)
def test_wrong_type_names_key_file_and_expected_type(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    path = tmp_path / "pixi.toml"
    with pytest.raises(UsageError) as raised:
        parse_table({key: value}, path, "pixi.toml [tool.lockship]")
    assert str(raised.value) == f"{key!r} in pixi.toml [tool.lockship] ({path}) must be {expected}"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        parse_table({"nmae": "x", "retries": "2"}, tmp_path / "lockship.toml", "lockship.toml")
    message = str(raised.value)
    assert "unknown key 'nmae'" in message and "(did you mean 'name'?)" in message
    assert "'retries' in lockship.toml" in message and message.count("valid keys:") == 1


def test_unreadable_toml(tmp_path: Path) -> None:
    write(tmp_path / "lockship.toml", "name = \n")
    with pytest.raises(UsageError, match=r"^cannot read the lockship settings in .*lockship\.toml"):
        read_config(tmp_path)


# --- merging ---------------------------------------------------------------------------------


def test_command_line_wins_and_repeatables_replace(tmp_path: Path) -> None:
    write(
        tmp_path / "pixi.toml",
        '[tool.lockship]\nname = "app"\nversion = "1.0"\nplatforms = ["linux-64", "win-64"]\n'
        'categories = ["main", "extra"]\nlink-scripts = false\n',
    )
    settings = settings_for(tmp_path, "--version", "2.0", "-p", "osx-arm64", "--category", "dev")
    assert settings.name == "app" and settings.version == "2.0"
    assert settings.platforms == ("osx-arm64",)
    assert settings.categories == ("dev",)
    assert settings.link_scripts == LinkScripts(run=False)
    sources = settings.sources
    assert sources["name"] == "pixi.toml [tool.lockship]"
    assert sources["version"] == sources["platforms"] == "command line"
    assert sources["timeout"] == "default"


def test_all_platforms_and_link_scripts_from_either_side(tmp_path: Path) -> None:
    write(tmp_path / "lockship.toml", 'platforms = "all"\nlink-scripts = ["a"]\n')
    settings = settings_for(tmp_path)
    assert settings.platforms == "all" and settings.link_scripts == LinkScripts(allowed=("a",))
    settings = settings_for(tmp_path, "-p", "linux-64", "--no-link-scripts")
    assert settings.platforms == ("linux-64",)
    assert settings.link_scripts == LinkScripts(run=False)


def test_defaults_without_a_table(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "--stub", "s")
    assert settings.environment == "default"
    assert settings.output_dir == Path("installers")
    assert settings.stubs == {PLATFORM: Path("s")}
    lines = describe_settings(settings)
    assert "  environment = default  (default)" in lines
    assert f"  stubs = {{{PLATFORM} = s}}  (command line)" in lines


# --- the default prefix, read by the installer ------------------------------------------------


def test_default_prefix_is_optional_in_the_manifest() -> None:
    assert InstallerOptions.from_dict({}).default_prefix is None
    assert InstallerOptions.from_dict({"default_prefix": "~/x"}).default_prefix == "~/x"
    with pytest.raises(TypeError, match="default_prefix is not a string"):
        InstallerOptions.from_dict({"default_prefix": 3})


def test_default_prefix_is_expanded_at_install_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPS", str(tmp_path / "apps"))
    manifest = Manifest.from_dict(
        {
            "name": "app",
            "version": "1",
            "platform": "linux-64",
            "environment": "default",
            "lockship_version": "0",
            "packages": [],
        }
    )
    assert _default_prefix(manifest) == str(tmp_path / "home" / "app")
    for chosen, expected in (("~/opt/app", "home/opt/app"), ("$APPS/app", "apps/app")):
        with_prefix = replace(manifest, options=InstallerOptions(default_prefix=chosen))
        assert _default_prefix(with_prefix) == str(tmp_path / expected)


# --- lockship build, run as a user would -----------------------------------------------------

TABLE = f"""
[tool.lockship]
name = "shipped"
version = "4.5.6"
platforms = ["{PLATFORM}"]
output-dir = "dist"
no-pyc = true
link-scripts = false
default-prefix = "~/opt/shipped"
stubs = {{{PLATFORM} = "stub"}}
"""


@pytest.fixture
def workspace(tmp_path: Path, demo_lock: Path) -> Path:
    """A copy of the demo workspace with a ``[tool.lockship]`` table and a stand-in stub."""
    folder = tmp_path / "ws"
    shutil.copytree(demo_lock, folder)
    with (folder / "pixi.toml").open("a", encoding="utf-8") as f:
        f.write(TABLE)
    write_stand_in_stub(folder / "stub")
    return folder


def lockship(*args: str | Path, cwd: Path, cache: Path) -> tuple[int, str, str]:
    result = run_lockship("build", *args, cwd=cwd, env={"LOCKSHIP_CACHE_DIR": str(cache)})
    return result.returncode, result.stdout, result.stderr


def manifest_of(stdout: str, cwd: Path) -> tuple[Path, Manifest]:
    installer = (cwd / stdout.strip().splitlines()[-1]).resolve()
    return installer, Manifest.from_dict(read_payload(installer).metadata)


def test_no_argument_build_equals_the_command_line_build(workspace: Path, tmp_path: Path) -> None:
    code, stdout, stderr = lockship(cwd=workspace, cache=tmp_path / "c")
    assert code == 0, stderr
    installer, from_table = manifest_of(stdout, workspace)
    assert installer == workspace.resolve() / "dist" / f"shipped-4.5.6-{PLATFORM}.sh"
    (workspace / "pixi.toml").write_text(
        (workspace / "pixi.toml").read_text().replace(TABLE, ""), encoding="utf-8"
    )
    code, stdout, stderr = lockship(
        *("--name", "shipped", "--version", "4.5.6", "-p", PLATFORM, "-o", tmp_path / "cli"),
        *("--no-pyc", "--no-link-scripts", "--default-prefix", "~/opt/shipped"),
        *("--stub", workspace / "stub"),
        cwd=workspace,
        cache=tmp_path / "c",
    )
    assert code == 0, stderr
    installer, from_cli = manifest_of(stdout, workspace)
    assert installer.name == f"shipped-4.5.6-{PLATFORM}.sh"
    assert (from_table.name, from_table.version, from_table.platform) == (
        from_cli.name,
        from_cli.version,
        from_cli.platform,
    )
    assert from_table.options == from_cli.options
    assert from_table.options.default_prefix == "~/opt/shipped"
    assert (from_table.options.pyc, from_table.options.link_scripts) == (False, False)


def test_command_line_overrides_the_table(workspace: Path, tmp_path: Path) -> None:
    code, stdout, stderr = lockship(
        "--version", "7.0", "-o", tmp_path / "o", cwd=workspace, cache=tmp_path / "c"
    )
    assert code == 0, stderr
    installer, manifest = manifest_of(stdout, workspace)
    assert installer == tmp_path.resolve() / "o" / f"shipped-7.0-{PLATFORM}.sh"
    assert manifest.options.pyc is False


def test_unknown_key_fails_with_exit_2(workspace: Path, tmp_path: Path) -> None:
    pixi_toml = workspace / "pixi.toml"
    pixi_toml.write_text(pixi_toml.read_text().replace("no-pyc", "no_pyc"), encoding="utf-8")
    code, _, stderr = lockship(workspace, cwd=tmp_path, cache=tmp_path / "c")
    assert code == 2
    (error,) = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert error.startswith(
        f"ERROR: unknown key 'no_pyc' in pixi.toml [tool.lockship] ({pixi_toml}) "
        "(did you mean 'no-pyc'?); valid keys: environment, platforms, name,"
    )
    assert "Traceback" not in stderr


def test_wrong_type_fails_with_exit_2(workspace: Path, tmp_path: Path) -> None:
    pixi_toml = workspace / "pixi.toml"
    pixi_toml.write_text(pixi_toml.read_text() + "retries = -1.5\n", encoding="utf-8")
    code, _, stderr = lockship(cwd=workspace, cache=tmp_path / "c")
    assert code == 2
    assert (
        f"ERROR: 'retries' in pixi.toml [tool.lockship] ({pixi_toml.relative_to(workspace)}) "
        "must be an integer, not a number"
    ) in stderr.splitlines()


def test_dry_run_prints_each_setting_and_its_source(workspace: Path, tmp_path: Path) -> None:
    code, stdout, stderr = lockship("--dry-run", "-j", "2", cwd=workspace, cache=tmp_path / "c")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "settings:"
    assert "  name = shipped  (pixi.toml [tool.lockship])" in lines
    assert "  concurrency = 2  (command line)" in lines
    assert "  environment = default  (default)" in lines
    assert f"  output-dir = {Path('dist')}  (pixi.toml [tool.lockship])" in lines
    assert any(line.startswith(f"installer:    {Path('dist')}") for line in lines)


def test_a_bad_name_in_the_table_is_named_by_key_and_table(workspace: Path, tmp_path: Path) -> None:
    pixi_toml = workspace / "pixi.toml"
    pixi_toml.write_text(
        pixi_toml.read_text().replace('name = "shipped"', 'name = "it\'s"'), encoding="utf-8"
    )
    code, _, stderr = lockship(cwd=workspace, cache=tmp_path / "c")
    assert code == 2
    (error,) = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert error.startswith(
        'ERROR: the name "it\'s" (from name in pixi.toml [tool.lockship]) holds "\'"'
    )
    assert not (workspace / "dist").exists()
