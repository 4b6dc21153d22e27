"""PyPI wheels: a local wheel locked without a hash is read again at every build."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import add_pypi_packages, write_stand_in_stub, write_wheel
from tests.runners import run_lockship


def test_a_rebuilt_local_wheel_is_the_one_shipped(tmp_path: Path, demo_lock: Path) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(demo_lock, workspace)
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)

    def wheel(value: int) -> Path:
        modules = {"app.py": f"VALUE = {value}\n"}
        return write_wheel(workspace / "dist", "app", "1.0", modules=modules)

    built = wheel(1)
    add_pypi_packages(
        workspace / "pixi.lock", DEMO_PLATFORM, [("app", "1.0", f"./dist/{built.name}", None)]
    )
    shipped = []
    for value in (1, 2):
        built = wheel(value)
        run = run_lockship(
            "build",
            workspace,
            "--stub",
            stub,
            "--cache-dir",
            tmp_path / "cache",
            "-o",
            tmp_path / f"out{value}",
        )
        assert run.returncode == 0, run.stderr
        entry = read_payload(Path(run.stdout.split()[-1])).entry(f"pypi/{built.name}")
        assert entry.sha256 == hashlib.sha256(built.read_bytes()).hexdigest(), value
        shipped.append(entry.sha256)
    assert shipped[0] != shipped[1]
