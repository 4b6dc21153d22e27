"""What the reach preparations share (``scripts/reach.py``): commands run with a log and a
timeout, and stamps written atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.runners import load_script

pytest.importorskip("fcntl", reason="scripts/reach.py locks its cache with fcntl (POSIX only)")
reach = load_script("reach")


def test_a_command_s_output_is_logged_and_its_stdout_returned(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step.log"
    out = reach.run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
        log=log,
    )
    assert out == "out\n"
    logged = log.read_text()
    assert "out\nerr\n" in logged and logged.startswith(f"\n$ {sys.executable} -c")


def test_a_failing_command_is_one_line_naming_its_log(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    with pytest.raises(reach.Failed, match=rf"exited 3 \(log: {log}\)$"):
        reach.run([sys.executable, "-c", "raise SystemExit(3)"], log=log)
    with pytest.raises(reach.Failed, match="cannot run /nonexistent/tool"):
        reach.run(["/nonexistent/tool"], log=log)


def test_a_command_that_hangs_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(reach.Failed, match=r"took more than 0.5 s$"):
        reach.run(["sleep", "30"], log=tmp_path / "step.log", timeout=0.5)


def test_stamps_are_written_whole_and_compared_exactly(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    assert not reach.has_stamp(stamps, "python", "key-1")
    reach.set_stamp(stamps, "python", "key-1")
    assert reach.has_stamp(stamps, "python", "key-1")
    assert not reach.has_stamp(stamps, "python", "key-2")
    reach.set_stamp(stamps, "python", "key-2")
    assert reach.has_stamp(stamps, "python", "key-2")
    assert sorted(p.name for p in stamps.iterdir()) == ["python"]  # no partial file left
    reach.set_stamp(stamps, "done")
    assert reach.has_stamp(stamps, "done")
