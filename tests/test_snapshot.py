"""The snapshot that makes an update all or nothing, in-process, on real rattler installs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import rattler
from lockship.stub.snapshot import (
    SNAPSHOT_NAME,
    clean_leftovers,
    find_interrupted,
    take_snapshot,
)
from rattler import Channel, PrefixRecord, RepoData, RepoDataRecord

from tests.factories import index_channel, write_conda_package
from tests.trees import tree_state

PLACEHOLDER = "/opt/lockship_placeholder_" + "x" * 40


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RepoDataRecord]:
    channel = tmp_path_factory.mktemp("channel")
    tool = "#!/bin/sh\necho " + PLACEHOLDER + " {}\n"
    for version, text in (("1", "one"), ("2", "two")):
        write_conda_package(
            channel,
            "app",
            version,
            files={"share/app.txt": f"app {text}", "share/same.txt": "same", "bin/tool": tool},
            text_placeholders={"bin/tool": PLACEHOLDER},
            symlinks={"bin/tool-link": "tool"},
        )
    write_conda_package(channel, "gone", "1", files={"share/gone/data.txt": "gone"})
    write_conda_package(channel, "new", "1", files={"share/new.txt": "new"})
    write_conda_package(channel, "kept", "1", files={"share/kept.txt": "kept"})
    index_channel(channel)
    repodata = RepoData.from_path(channel / "noarch" / "repodata.json")
    found = repodata.into_repo_data(Channel(channel.as_uri()))
    return {f"{r.name.normalized}-{r.version}": r for r in found}


def _install(prefix: Path, cache: Path, chosen: list[RepoDataRecord], update: bool) -> None:
    installed = (
        [PrefixRecord.from_path(p) for p in (prefix / "conda-meta").glob("*.json")]
        if update
        else None
    )
    asyncio.run(rattler.install(chosen, prefix, cache_dir=cache, installed_packages=installed))


@pytest.fixture
def v1(tmp_path: Path, records: dict[str, RepoDataRecord]) -> Path:
    prefix = tmp_path / "env"
    _install(
        prefix, tmp_path / "cache", [records["app-1"], records["gone-1"], records["kept-1"]], False
    )
    (prefix / "etc").mkdir()
    (prefix / "etc").chmod(0o750)
    return prefix


V2 = ("app-2", "new-1", "kept-1")


def test_an_update_then_a_restore_gives_back_every_byte_mode_and_link(
    v1: Path, tmp_path: Path, records: dict[str, RepoDataRecord]
) -> None:
    before = tree_state(v1)
    snapshot = take_snapshot(v1, journal={"name": "app", "version": "1"})
    _install(v1, tmp_path / "cache", [records[k] for k in V2], True)
    (v1 / "etc").chmod(0o700)
    after_update = tree_state(v1)
    assert after_update != before
    assert "share/new.txt" in after_update and "share/gone/data.txt" not in after_update

    changed = snapshot.restore()

    assert tree_state(v1) == before
    assert changed > 0
    assert not (v1 / SNAPSHOT_NAME).exists()
    assert find_interrupted(v1) is None


def test_rattler_replaces_files_rather_than_writing_into_them(
    v1: Path, tmp_path: Path, records: dict[str, RepoDataRecord]
) -> None:
    """What the snapshot relies on: rattler unlinks and creates, so the snapshot keeps the old
    bytes. Should a rattler release write into existing files, this fails first."""
    tool_before = (v1 / "bin" / "tool").read_bytes()
    take_snapshot(v1)
    _install(v1, tmp_path / "cache", [records[k] for k in V2], True)
    kept = v1 / SNAPSHOT_NAME / "tree"
    assert (kept / "share" / "app.txt").read_text() == "app one"
    assert (kept / "bin" / "tool").read_bytes() == tool_before
    assert (v1 / "share" / "app.txt").read_text() == "app two"
    # an unchanged package keeps its inodes: the update touched only what changed
    assert (kept / "share" / "kept.txt").samefile(v1 / "share" / "kept.txt")


def test_a_snapshot_left_by_a_killed_update_is_found_and_restored(
    v1: Path, tmp_path: Path, records: dict[str, RepoDataRecord]
) -> None:
    before = tree_state(v1)
    take_snapshot(v1, journal={"name": "app", "version": "1"})
    _install(v1, tmp_path / "cache", [records[k] for k in V2], True)
    # the process died here; the next run finds the journal
    found = find_interrupted(v1)
    assert found is not None
    assert (found.journal["name"], found.journal["version"]) == ("app", "1")
    found.restore()
    assert tree_state(v1) == before


def test_restoring_again_after_a_kill_while_restoring_finishes_the_job(
    v1: Path, tmp_path: Path, records: dict[str, RepoDataRecord]
) -> None:
    before = tree_state(v1)
    take_snapshot(v1)
    _install(v1, tmp_path / "cache", [records[k] for k in V2], True)
    # half a restore: the new files are back out, the old ones not yet in
    (v1 / "share" / "new.txt").unlink()
    (v1 / "share" / "app.txt").unlink()
    interrupted = find_interrupted(v1)
    assert interrupted is not None
    interrupted.restore()
    assert tree_state(v1) == before


def test_a_half_built_snapshot_is_no_journal_and_is_cleaned_up(v1: Path) -> None:
    partial = v1 / f"{SNAPSHOT_NAME}.partial" / "tree"
    partial.mkdir(parents=True)
    (partial / "junk").write_text("x")
    assert find_interrupted(v1) is None
    clean_leftovers(v1)
    assert not (v1 / f"{SNAPSHOT_NAME}.partial").exists()


def test_names_kept_out_are_neither_saved_nor_removed(v1: Path) -> None:
    (v1 / ".lockship.lock").write_text("")
    snapshot = take_snapshot(v1, keep_out=[".lockship.lock"])
    assert not (v1 / SNAPSHOT_NAME / "tree" / ".lockship.lock").exists()
    snapshot.restore()
    assert (v1 / ".lockship.lock").exists()


def test_success_discards_the_snapshot_and_keeps_the_update(
    v1: Path, tmp_path: Path, records: dict[str, RepoDataRecord]
) -> None:
    snapshot = take_snapshot(v1)
    _install(v1, tmp_path / "cache", [records[k] for k in V2], True)
    updated = tree_state(v1)
    snapshot.discard()
    assert tree_state(v1) == updated
    assert sorted(p.name for p in v1.iterdir() if p.name.startswith(".lockship")) == []
