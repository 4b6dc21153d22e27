"""Freeze the installer stub for this machine, with its sidecar OUTPUT.json (what CI publishes).

Usage: python scripts/freeze_stub.py -o OUTPUT [--compress]

The same as ``lockship freeze-stub -o OUTPUT [--compress]`` (which pip users have), runnable
from a checkout without installing it. Progress goes to stderr; the stub's facts (the sidecar's
content) go to stdout as JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lockship.builder.cli import main as lockship_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return lockship_main(["freeze-stub", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
