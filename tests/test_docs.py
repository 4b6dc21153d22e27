"""The documents agree with the code: every installer flag is documented, and the exit codes
are one table (the installer's and the builder's) that the README repeats and the installer's
``--help`` follows."""

from __future__ import annotations

import argparse
import re

from lockship.stub.cli import _build_parser

from tests.runners import REPO_ROOT

INSTALLER_DOC = REPO_ROOT / "docs" / "installer.md"
README = REPO_ROOT / "README.md"


def exit_code_table(text: str) -> str:
    match = re.search(r"<!-- exit-codes -->\n(.*?)<!-- /exit-codes -->", text, re.DOTALL)
    assert match, "no exit-codes table"
    return match.group(1)


def test_every_installer_flag_is_in_the_installer_doc() -> None:
    parser = _build_parser("installer.sh", None)
    flags = [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    ]
    assert "--recover" in flags
    documented: set[str] = set()
    for first_column in re.findall(r"^\| `([^|]*)` \|", INSTALLER_DOC.read_text(), re.M):
        documented.update(re.findall(r"--?[a-z][a-z-]*", first_column))
    assert sorted(set(flags) - documented) == []


def test_the_readme_shows_the_same_exit_code_table() -> None:
    table = exit_code_table(INSTALLER_DOC.read_text())
    assert exit_code_table(README.read_text()) == table
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["0", "1", "2", "129, 130, 143"]


def test_the_installer_help_names_every_code_of_the_table() -> None:
    epilog = _build_parser("installer.sh", None).epilog or ""
    table = exit_code_table(INSTALLER_DOC.read_text())
    for line in table.splitlines()[2:]:
        for code in line.split("|")[1].strip().split(", "):
            assert re.search(rf"\b{code}\b", epilog), code
