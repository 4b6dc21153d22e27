"""The synthetic environment generator the benchmark and the soak test share."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import rattler
from lockship.builder.testing.synthetic import (
    MB,
    PLACEHOLDER,
    EnvSpec,
    ensure_env,
    plan_env,
    text_compression_ratio,
)

from tests.conftest import DEMO_PLATFORM

SPEC = EnvSpec(
    name="tiny",
    packages=6,
    archive_bytes=1 * MB,
    files=120,
    binary_share=0.7,
    binary_file_share=0.2,
    text_placeholder_share=0.1,
    binary_placeholder_share=0.5,
    seed=5,
)


def test_a_plan_has_the_files_and_bytes_the_spec_asks_for() -> None:
    plans = plan_env(SPEC, 3.0, DEMO_PLATFORM)
    assert len(plans) == SPEC.packages
    assert plan_env(SPEC, 3.0, DEMO_PLATFORM) == plans  # seeded: the same every time
    assert sum(len(p.text_sizes) + len(p.binary_sizes) for p in plans) == SPEC.files
    assert all(p.text_sizes or p.binary_sizes for p in plans)
    assert sum(sum(p.binary_sizes) for p in plans) == int(SPEC.archive_bytes * SPEC.binary_share)
    assert {p.subdir for p in plans} == {"noarch", DEMO_PLATFORM}
    names = [p.name for p in plans]
    for i, plan in enumerate(plans):
        assert set(plan.depends) <= set(names[:i])  # dependencies come first


def test_the_key_changes_with_any_field() -> None:
    assert EnvSpec(**{**SPEC.__dict__, "seed": 6}).key() != SPEC.key()
    assert EnvSpec(**SPEC.__dict__).key() == SPEC.key()


def test_the_text_compresses_about_like_source_code() -> None:
    assert 2.5 < text_compression_ratio() < 6


def test_an_environment_is_generated_once_and_installs_relocated(tmp_path: Path) -> None:
    heard: list[str] = []
    env = ensure_env(tmp_path, SPEC, DEMO_PLATFORM, jobs=1, on_generate=heard.append)
    assert heard and heard[0].startswith("generating the 'tiny' channel")
    assert env.stats["packages"] == SPEC.packages
    assert env.stats["files"] == SPEC.files
    assert 0.5 * MB < env.archive_bytes < 2 * MB
    assert env.stats["text_placeholder_files"] > 0 and env.stats["binary_placeholder_files"] > 0
    stamps = [a.stat().st_mtime_ns for a in env.archives]

    again = ensure_env(tmp_path, SPEC, DEMO_PLATFORM, jobs=1, on_generate=heard.append)
    assert len(heard) == 2  # the generation and its summary: nothing the second time
    assert [a.stat().st_mtime_ns for a in again.archives] == stamps
    assert again.stats == env.stats

    lock = rattler.LockFile.from_path(env.workspace / "pixi.lock")
    environment = lock.environment("default")
    assert environment is not None
    (platform,) = [p for p in lock.platforms() if p.name == DEMO_PLATFORM]
    records = environment.conda_repodata_records_for_platform(platform)
    assert records is not None and len(records) == SPEC.packages
    prefix = tmp_path / "prefix"
    asyncio.run(rattler.install(records, prefix, cache_dir=tmp_path / "cache", show_progress=False))
    text = (prefix / env.stats["example_text_placeholder"]).read_bytes()
    binary = (prefix / env.stats["example_binary_placeholder"]).read_bytes()
    assert PLACEHOLDER.encode() not in text + binary
    assert str(prefix).encode() in text
    assert str(prefix).encode() + b"\0" in binary
    assert json.loads((env.root / "env.json").read_text())["spec"]["name"] == "tiny"
