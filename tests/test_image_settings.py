"""Image settings from the command line and ``[tool.lockship.image]``, and registry
references."""

from __future__ import annotations

from pathlib import Path

import pytest
from lockship.builder.config import parse_table
from lockship.builder.errors import UsageError
from lockship.builder.image.oci import ImageError
from lockship.builder.image.registry import Reference, auth_files
from lockship.builder.image.settings import ImageSettings
from lockship.builder.options import given_on_command_line
from lockship.builder.settings import (
    BUILD_COMMAND,
    Settings,
    describe_settings,
    merge_settings,
    parse_arguments,
)

from tests.conftest import DEMO_PLATFORM
from tests.runners import run_lockship


def _merged(argv: list[str], table: dict[str, object] | None = None) -> Settings:
    args = parse_arguments(["build", *argv])
    config = parse_table(table, Path("/w/pixi.toml"), "pixi.toml") if table else None
    given = given_on_command_line(args, Settings, BUILD_COMMAND)
    image = given_on_command_line(args, ImageSettings, BUILD_COMMAND)
    return merge_settings(given, config, image)


def _settings(argv: list[str], table: dict[str, object] | None = None) -> ImageSettings | None:
    return _merged(argv, table).image


def test_no_image_unless_asked() -> None:
    assert _settings([]) is None


def test_the_command_line_overrides_the_table_key_by_key() -> None:
    table = {
        "image": {
            "prefix": "/srv/app",
            "cmd": "app --serve",
            "base": "b.tar",
            "auth-file": "auth.json",
        }
    }
    settings = _settings(["--image", "--cmd", '["app", "--once"]', "--image-user", "1000"], table)
    assert settings == ImageSettings(
        prefix="/srv/app",
        base="b.tar",
        cmd=("app", "--once"),
        user="1000",
        registry_auth_file=Path("/w/auth.json"),
    )
    assert _settings([], table) == ImageSettings(
        prefix="/srv/app",
        base="b.tar",
        cmd=("app", "--serve"),
        registry_auth_file=Path("/w/auth.json"),
    )


def test_any_image_option_asks_for_an_image() -> None:
    assert _settings(["--image"]) == ImageSettings()
    assert _settings(["--push", "127.0.0.1:5000/app:1"]) == ImageSettings(
        push="127.0.0.1:5000/app:1"
    )
    assert _settings(["--image-annotation", "a=1", "--image-annotation", "b=x=y"]) == (
        ImageSettings(annotations={"a": "1", "b": "x=y"})
    )


def test_dry_run_shows_each_image_key_and_where_it_came_from() -> None:
    lines = describe_settings(_merged(["--image-user", "1000"], {"image": {"base": "b.tar"}}))
    assert "  image.base = b.tar  (pixi.toml)" in lines
    assert "  image.user = 1000  (command line)" in lines
    assert "  image.push = (none)  (default)" in lines
    assert "  image = (none)  (default)" in describe_settings(_merged([]))


def test_bad_table_values_are_named() -> None:
    with pytest.raises(UsageError) as raised:
        _settings([], {"image": "yes"})
    assert str(raised.value) == (
        "'image' in pixi.toml (/w/pixi.toml) must be a table of image settings, not a string"
    )
    with pytest.raises(UsageError) as raised:
        _settings([], {"image": {"cmd": 3, "tag": "x"}})
    assert str(raised.value) == (
        "'image' in pixi.toml (/w/pixi.toml): 'cmd' in the image table must be a command (an "
        "array of strings, or words), not an integer; unknown key 'tag' in the image table; "
        "valid keys: only, prefix, base, user, workdir, entrypoint, cmd, push, auth-file, "
        "annotations"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--entrypoint", "[app"], "--entrypoint '[app' is not a JSON array: "),
        (["--cmd", '["a", 1]'], "--cmd '[\"a\", 1]' must be an array of strings (see "),
        (["--image-annotation", "novalue"], "--image-annotation takes KEY=VALUE, not 'novalue'"),
    ],
)
def test_a_bad_image_flag_is_a_usage_error(argv: list[str], error: str) -> None:
    with pytest.raises(UsageError) as raised:
        _settings(argv)
    assert str(raised.value).startswith(error)
    assert str(raised.value).endswith("(see lockship build --help)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/team/app:1.0", Reference("127.0.0.1:5000", "team/app", "1.0", None)),
        ("registry.example/app", Reference("registry.example", "app", None, None)),
        (
            "localhost/app@sha256:" + "a" * 64,
            Reference("localhost", "app", None, "sha256:" + "a" * 64),
        ),
    ],
)
def test_references(text: str, expected: Reference) -> None:
    assert Reference.parse(text) == expected
    assert str(expected) == text


def test_only_this_machine_is_reached_over_plain_http() -> None:
    assert Reference.parse("127.0.0.1:5000/app:1").plain_http
    assert Reference.parse("localhost:5000/app:1").plain_http
    assert not Reference.parse("registry.example:5000/app:1").plain_http


def test_a_name_without_a_registry_is_refused() -> None:
    with pytest.raises(ImageError, match="is not a registry reference"):
        Reference.parse("app:1.0")


def test_credentials_files_in_order(tmp_path: Path) -> None:
    runtime = tmp_path / "run" / "containers"
    runtime.mkdir(parents=True)
    (runtime / "auth.json").write_text("{}")
    docker = tmp_path / "home" / ".docker"
    docker.mkdir(parents=True)
    (docker / "config.json").write_text("{}")
    environ = {"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    assert auth_files(None, environ) == [runtime / "auth.json", docker / "config.json"]
    explicit = tmp_path / "mine.json"
    with pytest.raises(ImageError, match="does not exist"):
        auth_files(explicit, environ)
    explicit.write_text("{}")
    assert auth_files(explicit, environ) == [explicit]


def test_dry_run_names_the_image_it_would_write(
    tmp_path: Path, demo_lock: Path, frozen_stub: Path
) -> None:
    out = tmp_path / "out"
    common = ["build", demo_lock, "--dry-run", "-o", out, "--cache-dir", tmp_path / "cache"]
    run = run_lockship(*common, "--image", "--stub", frozen_stub)
    assert run.returncode == 0, run.stderr
    (installer,) = [line.split()[1] for line in run.stdout.splitlines() if "installer:" in line]
    image = Path(installer).with_suffix(".oci.tar")
    assert image.parent == out and image.name.endswith(f"-{DEMO_PLATFORM}.oci.tar")
    assert [line for line in run.stdout.splitlines() if line.startswith("image:")] == [
        f"image:        {image}"
    ]
    assert "  image.only = false  (default)" in run.stdout.splitlines()
    # only the image: no installer, and no stub is looked for
    run = run_lockship(*common, "--image-only")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "installer:    none (--image-only)" in lines
    assert f"image:        {image}" in lines and not any("stub:" in line for line in lines)
    assert "  image.only = true  (command line)" in lines
    assert not out.exists()
