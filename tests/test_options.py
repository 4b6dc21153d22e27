"""An option declared once, on a dataclass of its own: the flags, the table key, the errors of
both and the help come from that one declaration."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest
from lockship.builder.errors import UsageError
from lockship.builder.options import (
    BOOLEAN,
    NEGATED_BOOLEAN,
    PATHS,
    TEXT,
    Flag,
    add_options,
    declared,
    given_on_command_line,
    integer,
    option,
    read_table,
    show_value,
)


@dataclass(frozen=True)
class Toy:
    label: str | None = option("-l", "--label", default=None, kind=TEXT, help="a label")
    depth: int = option(
        "--depth", default=2, kind=integer(minimum=1, unit="levels"), help="(default: %(default)s)"
    )
    files: tuple[Path, ...] = option("--file", default=(), kind=PATHS, metavar="F", help="files")
    color: bool = option(
        default=True,
        kind=NEGATED_BOOLEAN,
        key="no-color",
        switches=[Flag(("--no-color",), "plain output", const=False)],
    )
    cache: Path | None = option("--cache", default=None, kind=TEXT, key=None, help="run only")


def parse(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="toy")
    add_options(parser, Toy)
    return given_on_command_line(parser.parse_args(argv), Toy, "toy")


def test_declared_keys_follow_field_names_unless_given() -> None:
    assert [(d.name, d.key) for d in declared(Toy)] == [
        ("label", "label"),
        ("depth", "depth"),
        ("files", "files"),
        ("color", "no-color"),
        ("cache", None),
    ]
    assert [d.default for d in declared(Toy)] == [None, 2, (), True, None]


def test_only_the_flags_given_are_values() -> None:
    assert parse() == {}
    assert parse("-l", "x", "--file", "a", "--file", "b", "--no-color", "--depth", "3") == {
        "label": "x",
        "files": (Path("a"), Path("b")),
        "color": False,
        "depth": 3,
    }


def test_a_bad_value_names_the_long_flag() -> None:
    with pytest.raises(UsageError) as raised:
        parse("--depth", "0")
    assert str(raised.value) == "--depth must be at least 1 (see toy --help)"
    with pytest.raises(UsageError) as raised:
        parse("--depth", "deep")
    assert str(raised.value) == "--depth must be an integer (levels), not 'deep' (see toy --help)"


def test_the_table_is_read_by_key_relative_to_its_file(tmp_path: Path) -> None:
    values = read_table({"files": ["a", "~/b"], "no-color": True}, Toy, tmp_path, "in t")
    assert values == {"files": (tmp_path / "a", Path("~/b").expanduser()), "color": False}


def test_every_table_problem_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        read_table({"depth": 0, "lable": "x", "cache": "c", "files": "a"}, Toy, tmp_path, "in t")
    assert str(raised.value) == (
        "'depth' in t must be at least 1; unknown key 'lable' in t (did you mean 'label'?); "
        "unknown key 'cache' in t; 'files' in t must be a list of paths, not a string; "
        "valid keys: label, depth, files, no-color"
    )


def test_help_shows_the_declared_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="toy")
    add_options(parser, Toy)
    parser.print_help()
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--depth DEPTH (default: 2)" in help_text
    assert "--no-color plain output" in help_text


def test_values_are_shown_as_the_table_writes_them() -> None:
    assert show_value({"a": (Path("x"), True, None)}) == "{a = [x, true, (none)]}"
    (color,) = [d for d in declared(Toy) if d.name == "color"]
    assert color.option.kind.show(False) == "true"  # no-color = true


def test_a_value_flag_needs_a_kind_that_parses() -> None:
    with pytest.raises(TypeError, match=r"^--x takes a value"):
        option("--x", default=False, kind=BOOLEAN, help="")
