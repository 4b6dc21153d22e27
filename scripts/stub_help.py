"""Run a frozen stub's ``--help`` as an installer would run its program (CI's smoke test).

Usage: python scripts/stub_help.py STUB

A Windows ``.exe`` runs as it is; a Linux or macOS stub pack is unpacked first, by its own
unpacker, into a temporary folder (what the ``.sh`` header does). Exits with the program's code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from freeze_stub import import_checkout


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    stub = Path(argv[0])
    if stub.name.endswith(".exe"):
        return subprocess.run([str(stub), "--help"], check=False).returncode
    import_checkout()
    from lockship.builder.stubs.pack import unpack

    with tempfile.TemporaryDirectory(prefix="lockship-stub-help-") as tmp:
        program = unpack(stub, Path(tmp))
        return subprocess.run([str(program), "--help"], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
