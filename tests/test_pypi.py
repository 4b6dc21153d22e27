"""PyPI wheels: a local wheel locked without a hash is read again at every build; a wheel
whose URL spells its local version's ``+`` as ``%2B`` (every CUDA wheel of PyTorch) installs
under its real name and version."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    write_pixi_lock,
    write_stand_in_stub,
    write_wheel,
)
from tests.runners import run_installer, run_lockship


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


@pytest.mark.e2e
def test_a_wheel_with_an_encoded_local_version_installs_under_its_real_name(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    modules = {"hello/__init__.py": "def main():\n    print('hello 2.0+cu121')\n"}
    wheel = write_wheel(channel, "hello", "2.0+cu121", modules=modules)
    assert wheel.name == "hello-2.0+cu121-py3-none-any.whl"
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM, ["python"])
        lock = write_pixi_lock(
            tmp_path / "ws" / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url
        )
        # as an index serves it and pixi locks it: "+" spelled "%2B", and a query string
        location = f"{server.url}/hello-2.0%2Bcu121-py3-none-any.whl?download=1"
        add_pypi_packages(lock, DEMO_PLATFORM, [("hello", "2.0+cu121", location, sha)])
        run = run_lockship(
            "build", lock, "--stub", frozen_stub, "--cache-dir", tmp_path / "cache",
            "-o", tmp_path / "out",
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    installer = Path(run.stdout.strip().splitlines()[-1])
    info = run_installer(installer, "--info")
    assert "hello 2.0+cu121" in " ".join(info.stdout.split()), info.stdout
    prefix = tmp_path / "env"
    result = run_installer(installer, "-b", "-p", prefix)
    assert result.returncode == 0, result.stderr
    site = prefix / "lib" / "python3.11" / "site-packages"
    metadata = (site / "hello-2.0+cu121.dist-info" / "METADATA").read_text()
    assert "Version: 2.0+cu121" in metadata
    out = subprocess.run(
        [prefix / "bin" / "python", "-c", "import hello; hello.main()"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.stdout.strip() == "hello 2.0+cu121", out.stderr
