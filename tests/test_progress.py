"""The installer's progress reporters: the events it writes for programs that time it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from lockship.stub.errors import InstallError
from lockship.stub.shared.progress import EVENTS_ENV, EventReporter, SilentReporter, with_events

from tests.factories import RecordingReporter
from tests.runners import run_installer


def test_events_are_json_lines_and_the_shown_reporter_still_hears_everything(
    tmp_path: Path,
) -> None:
    shown, path = RecordingReporter(), tmp_path / "events.jsonl"
    before = time.time()
    reporter = EventReporter(shown, path)
    reporter.message("Installing demo")
    reporter.start("Linking", 3, "pkg")
    reporter.advance(3)
    reporter.finish()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "time"} for e in events] == [
        {"event": "message", "text": "Installing demo"},
        {"event": "start", "stage": "Linking", "total": 3, "unit": "pkg"},
        {"event": "finish", "stage": "Linking"},
    ]
    times = [e["time"] for e in events]
    assert before <= times[0] <= times[1] <= times[2] <= time.time()
    assert shown.events == [("message", "Installing demo"), ("start", "Linking"), ("finish", "")]


def test_without_the_variable_the_reporter_is_the_shown_one() -> None:
    shown = SilentReporter()
    assert with_events(shown, None) is shown
    assert with_events(shown, "") is shown


def test_events_are_appended_to_the_named_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"time": 0, "event": "message", "text": "earlier"}\n')
    reporter = with_events(SilentReporter(), str(path))
    reporter.start("Verifying", 1)
    reporter.finish()
    kinds = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert kinds == ["message", "start", "finish"]


def test_an_events_file_that_cannot_be_written_is_an_install_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "events.jsonl"
    with pytest.raises(InstallError, match=f"cannot write progress events to .*{EVENTS_ENV}"):
        with_events(SilentReporter(), str(missing))
    assert not missing.parent.exists()


@pytest.mark.e2e
def test_the_installer_writes_its_stages_as_events(tmp_path: Path, demo_installer: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix, env={EVENTS_ENV: str(events_file)})
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    stages = [e["stage"] for e in events if e["event"] == "start"]
    assert stages, events
    assert stages == [e["stage"] for e in events if e["event"] == "finish"]
    for stage in stages:
        assert f"{stage}: done" in run.stderr  # what the user sees is unchanged
    times = [e["time"] for e in events]
    assert times == sorted(times)
    assert (prefix / "conda-meta").is_dir()
