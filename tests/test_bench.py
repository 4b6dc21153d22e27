"""Smoke test of scripts/bench.py at a tiny size: it runs end to end and writes sane JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_PLATFORM

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.skipif(
    not DEMO_PLATFORM.startswith("linux-"),
    reason="scripts/bench.py builds .sh installers and samples /proc: Linux only",
)
def test_bench_smoke(tmp_path: Path, frozen_stub: Path) -> None:
    results = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "scripts" / "bench.py"), "--scale", "0.005"]
    command += ["--repeat", "1", "--startup-repeat", "1", "--skip-1gb", "--stub", str(frozen_stub)]
    command += ["--work", str(tmp_path / "work"), "--json", str(results)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "install (main)" in process.stdout

    doc = json.loads(results.read_text())
    measures = {row["measure"]: row for row in doc["summary"]}
    assert {"build, warm cache (main)", "installer size (main)", "install (main)"} <= set(measures)
    assert measures["startup, 1 GB payload"]["met"] is None  # skipped
    assert doc["results"]["startup"]["median_s"]["1mb"] > 0

    stats = doc["environments"]["main"]["stats"]
    assert stats["packages"] == 40
    assert stats["text_placeholder_files"] > 0
    assert stats["binary_placeholder_files"] > 0

    build = doc["results"]["build"]["main"]
    assert build["installer_bytes"] >= build["archive_bytes"] + build["stub_bytes"]
    install = doc["results"]["install"]["main"]
    for key in ("installer_median_s", "bare_median_s", "first_line_median_s"):
        assert 0 < install[key] < 120, key
    assert install["first_line"].startswith("Installing ")
    assert install["peak_rss_median_mb"] > 1
    assert not math.isnan(install["bare_peak_rss_median_mb"])
    assert install["prefix_check"]["relocation_problems"] == []
    assert install["prefix_check"]["files_installer"] > 0
