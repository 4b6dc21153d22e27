"""Soak: a 1 GB environment of many packages, built and installed for real, then every installed
file checked against its conda-meta record. Slow: run with ``pytest -m slow``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from lockship.builder.testing.synthetic import MB, EnvSpec, ensure_env

from tests.conftest import DEMO_PLATFORM
from tests.runners import run_installer, run_lockship

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        DEMO_PLATFORM != "linux-64",
        reason="the synthetic environment is generated for linux-64: x86_64 Linux only",
    ),
]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_one_gigabyte_of_many_packages(tmp_path: Path, frozen_stub: Path) -> None:
    spec = EnvSpec(
        name="soak",
        packages=120,
        archive_bytes=1000 * MB,
        files=20_000,
        binary_share=0.85,
        binary_file_share=0.2,
        text_placeholder_share=0.03,
        binary_placeholder_share=0.1,
        seed=16,
    )
    env = ensure_env(Path("/tmp/lockship-soak"), spec, DEMO_PLATFORM, jobs=2)
    run = run_lockship(
        "build",
        env.workspace,
        "--stub",
        frozen_stub,
        "-o",
        tmp_path,
        "--cache-dir",
        tmp_path / "cache",
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr
    installer = Path(run.stdout.strip().splitlines()[-1])
    prefix = tmp_path / "env"
    result = run_installer(installer, "-b", "-p", prefix, timeout=1800)
    assert result.returncode == 0, result.stderr
    checked = 0
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text())
        for entry in record["paths_data"]["paths"]:
            path = prefix / entry["_path"]
            if entry.get("path_type") == "softlink":
                assert path.is_symlink(), path
                continue
            assert path.is_file(), path
            if entry.get("prefix_placeholder") or entry.get("file_mode"):
                continue  # relocated: its content changed on purpose
            assert path.stat().st_size == entry["size_in_bytes"], path
            assert sha256(path) == entry["sha256"], path
            checked += 1
    assert checked > 10_000
