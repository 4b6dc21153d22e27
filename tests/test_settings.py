"""Every build option, declared once: what the declarations generate (the command line, the
table's keys, errors that name where a bad value came from) and the docs that list them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from lockship.builder.config import parse_table, read_config
from lockship.builder.errors import UsageError
from lockship.builder.image.settings import ImageSettings
from lockship.builder.options import declared, given_on_command_line
from lockship.builder.settings import (
    BUILD_COMMAND,
    BuildRequest,
    LinkScripts,
    Settings,
    build_parser,
    describe_settings,
    merge_settings,
    parse_arguments,
)

from tests.runners import run_lockship

REPO = Path(__file__).resolve().parent.parent
BUILDER_MD = (REPO / "docs" / "builder.md").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")


def given(*argv: str) -> dict[str, object]:
    return given_on_command_line(parse_arguments(["build", *argv]), Settings, BUILD_COMMAND)


def long_flags(cls: type) -> list[str]:
    return [max(f.names, key=len) for d in declared(cls) for f in d.option.flags]


def keys() -> list[str]:
    return [d.key for d in declared(Settings) if d.key is not None]


# --- the docs list every option ------------------------------------------------------------


def test_every_flag_has_its_row_in_the_options_table() -> None:
    rows = [line for line in BUILDER_MD.splitlines() if line.startswith("| `")]
    missing = [
        flag
        for flag in long_flags(Settings) + long_flags(BuildRequest) + long_flags(ImageSettings)
        if not any(re.search(rf"`(-\w, )?{flag}[ `]", row) for row in rows)
    ]
    assert not missing, f"docs/builder.md's options table lacks {missing}"


def test_every_key_is_in_the_table_example() -> None:
    example = BUILDER_MD.split("```toml\n", 1)[1].split("```", 1)[0]
    top, image_header, image = example.partition("[tool.lockship.image]")
    written = [line.split(" =", 1)[0] for line in top.splitlines() if " = " in line]
    assert written + (["image"] if image_header else []) == keys()
    image_keys = [line.split(" =", 1)[0] for line in image.splitlines() if " = " in line]
    assert image_keys == [d.key for d in declared(ImageSettings)]
    # the example is valid: every key of it reads
    table = parse_table(tomllib.loads(example)["tool"]["lockship"], REPO / "pixi.toml", "x")
    assert set(table.values) == {d.name for d in declared(Settings) if d.key}


def test_the_flags_kept_off_the_table_are_named_where_the_table_is_explained() -> None:
    off_table = long_flags(BuildRequest)
    kept_off = next(line for line in BUILDER_MD.splitlines() if "Kept off the table" in line)
    paragraph = BUILDER_MD[BUILDER_MD.index(kept_off) :].split("\n- ", 1)[0]
    assert all(f"`{flag}`" in paragraph for flag in off_table), paragraph
    readme = " ".join(README.split())
    claim = readme[readme.index("`[tool.lockship]`") - 200 : readme.index("`[tool.lockship]`")]
    assert all(f"`{flag}`" in claim for flag in off_table), claim


# --- one declaration, every spelling ---------------------------------------------------------


def test_the_declarations_generate_the_command_line() -> None:
    assert given("-e", "prod", "-j", "3", "--no-pyc", "--all-platforms") == {
        "environment": "prod",
        "concurrency": 3,
        "pyc": False,
        "platforms": "all",
    }
    assert given() == {}
    assert given("--link-scripts", "allow=B, a,b") == {
        "link_scripts": LinkScripts(allowed=("a", "b"))
    }


def test_link_scripts_is_one_type_from_either_side(tmp_path: Path) -> None:
    table = parse_table({"link-scripts": ["B ", "a", "b"]}, tmp_path / "x.toml", "x.toml")
    assert table.values["link_scripts"] == given("--link-scripts", "allow=a,B")["link_scripts"]
    assert parse_table({"link-scripts": False}, tmp_path / "x.toml", "x.toml").values == {
        "link_scripts": given("--no-link-scripts")["link_scripts"]
    }
    lines = describe_settings(merge_settings(given("--link-scripts", "allow=b,a"), None))
    assert "  link-scripts = [a, b]  (command line)" in lines
    assert "  link-scripts = true  (default)" in describe_settings(Settings())


def test_pyc_is_one_field_whose_key_and_flag_say_no(tmp_path: Path) -> None:
    assert Settings().pyc is True
    from_table = parse_table({"no-pyc": True}, tmp_path / "x.toml", "x.toml")
    settings = merge_settings({}, from_table)
    assert settings.pyc is False
    assert "  no-pyc = true  (x.toml)" in describe_settings(settings)


def test_defaults_are_declared_once_and_shown_in_the_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    defaults = Settings()
    assert (defaults.timeout, defaults.retries, defaults.concurrency) == (60, 3, 8)
    assert defaults.categories == ("main",)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "give up on a download request after this long (default: 60)" in help_text
    assert "parallel downloads (default: 8)" in help_text


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--timeout", "0"], "--timeout must be at least 1 (see lockship build --help)"),
        (["-j", "0"], "--concurrency must be at least 1 (see lockship build --help)"),
        (["--retries", "-1"], "--retries must be at least 0 (see lockship build --help)"),
        (
            ["--timeout", "soon"],
            "--timeout must be an integer (seconds), not 'soon' (see lockship build --help)",
        ),
        (
            ["--link-scripts", "foo"],
            "--link-scripts takes allow=NAME[,NAME...], not 'foo' (see lockship build --help)",
        ),
        (
            ["--all-platforms", "-p", "linux-64"],
            "argument -p/--platform: not allowed with argument --all-platforms "
            "(see lockship build --help)",
        ),
    ],
)
def test_a_bad_flag_is_named(argv: list[str], error: str) -> None:
    with pytest.raises(UsageError) as raised:
        given(*argv)
    assert str(raised.value) == error
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("timeout", 0, "must be at least 1"),
        ("concurrency", -2, "must be at least 1"),
        ("retries", -1, "must be at least 0"),
    ],
)
def test_a_bad_table_value_is_named_by_key_and_file(
    tmp_path: Path, key: str, value: int, error: str
) -> None:
    path = tmp_path / "pixi.toml"
    with pytest.raises(UsageError) as raised:
        parse_table({key: value}, path, "pixi.toml [tool.lockship]")
    assert str(raised.value) == f"{key!r} in pixi.toml [tool.lockship] ({path}) {error}"


def test_a_table_value_out_of_range_fails_the_build_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "pixi.toml").write_text("[tool.lockship]\ntimeout = 0\n", encoding="utf-8")
    result = run_lockship("build", "--dry-run", cwd=tmp_path, env={"LOCKSHIP_CACHE_DIR": "c"})
    assert result.returncode == 2
    assert result.error_lines == [
        "ERROR: 'timeout' in pixi.toml [tool.lockship] (pixi.toml) must be at least 1"
    ]
    assert not (tmp_path / "c").exists() and not (tmp_path / "installers").exists()


def test_a_run_value_stays_off_the_table(tmp_path: Path) -> None:
    (tmp_path / "lockship.toml").write_text('cache-dir = "c"\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"^unknown key 'cache-dir' in lockship.toml"):
        read_config(tmp_path)


def test_the_request_holds_the_settings_and_the_run() -> None:
    args = parse_arguments(["build", "x.lock", "--dry-run", "--cache-dir", "c", "-e", "prod"])
    run = given_on_command_line(args, BuildRequest, BUILD_COMMAND)
    assert run == {"dry_run": True, "cache_dir": Path("c")}
    settings = merge_settings(given_on_command_line(args, Settings, BUILD_COMMAND), None)
    request = BuildRequest(settings=settings, path=args.path, **run)
    assert request.settings.environment == "prod" and request.path == Path("x.lock")
    with pytest.raises(UsageError, match=r"^--delta-version only goes with --delta-from OLD$"):
        BuildRequest(delta_version="1.0")
