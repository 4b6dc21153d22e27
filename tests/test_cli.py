"""The installer's command line in-process: one parse, and what it decides before any payload
is read (end to end in tests/test_stub_cli.py)."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockship.stub import cli, signals
from lockship.stub.errors import UsageError
from lockship.stub.launch import LOG_DIR_ENV


def test_grouped_flags_are_parsed_like_separate_ones() -> None:
    args = cli.parse_arguments(["-bf", "-p", "/opt/env"], "demo.sh")
    assert (args.batch, args.force, args.prefix) == (True, True, "/opt/env")


def test_unknown_arguments_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^unrecognized arguments: --bogus x \(see --help\)$"):
        cli.parse_arguments(["--bogus", "-b", "x"], "demo.sh")


def test_help_wins_over_other_mistakes() -> None:
    assert cli.parse_arguments(["--bogus", "-h"], "demo.sh").help


def test_json_only_goes_with_info() -> None:
    with pytest.raises(UsageError, match=r"^--json only goes with --info \(see --help\)$"):
        cli.parse_arguments(["--json"], "demo.sh")
    assert cli.parse_arguments(["--info", "--json"], "demo.sh").json


def test_help_of_an_unreadable_installer_is_the_generic_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.show_help("demo.sh", tmp_path / "missing.sh") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: demo.sh [-h]")
    assert "Install an env: a conda environment built by lockship" in out
    assert "(default: ~/NAME)" in out


@pytest.fixture
def double_clicked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """main() as in a console window of its own, whose user presses Enter."""
    monkeypatch.setattr(cli, "owns_console", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    saved = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    yield monkeypatch
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize(
    ("flags", "pauses"), [(["-bf"], False), (["-b"], False), (["-f"], True), ([], True)]
)
def test_only_batch_skips_the_pause_in_a_window_of_its_own(
    tmp_path: Path,
    double_clicked: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    pauses: bool,
) -> None:
    broken = tmp_path / "broken.exe"
    broken.write_bytes(b"MZ not an installer")
    assert cli.main([*flags, "--installer", str(broken)]) == 1
    out = capsys.readouterr()
    assert "not a complete lockship installer" in out.err
    paused = "\nThe installer FAILED (exit code 1). Press Enter to close this window.\n"
    assert (paused in out.out) == pauses
