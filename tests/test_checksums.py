"""``SHA256SUMS`` beside the installers: builds sharing an output folder keep each other's lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lockship.builder.output.checksums import read_checksums

from tests.runners import REPO_ROOT

WRITER = """
import sys
from pathlib import Path
from lockship.builder.output.checksums import update_checksums
folder, who = Path(sys.argv[1]), sys.argv[2]
for n in range(150):
    update_checksums(folder, {folder / f"{who}-{n}.sh": f"{n:064x}"})
"""


def test_concurrent_builds_lose_no_line(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text(f"{'a' * 64}  earlier.sh\n")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, tmp_path, who], cwd=REPO_ROOT)
        for who in ("one", "two", "three")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    sums = read_checksums(tmp_path / "SHA256SUMS")
    assert len(sums) == 1 + 3 * 150
    assert sums["earlier.sh"] == "a" * 64 and sums["two-149.sh"] == f"{149:064x}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS"]
