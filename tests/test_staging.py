"""Which staging route a source gets: worker processes when its archives lie as-is in one
installer file (``PackageSource.locate``), verified copies otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lockship.stub.shared.manifest import Manifest, PackageInfo
from lockship.stub.shared.payload import read_payload
from lockship.stub.source import PayloadSource, StoredEntry
from lockship.stub.staging import CopyStager, WorkerStager, choose_stager

from tests.factories import (
    MemorySource,
    RecordingReporter,
    core_manifest,
    locked_package,
    write_conda_package,
    write_payload,
)


@dataclass(frozen=True)
class ForwardingSource:
    """Another kind of source whose entries lie in an installer file: it says where."""

    inner: PayloadSource

    def read(self, name: str) -> Iterator[bytes]:
        return self.inner.read(name)

    def digest(self, name: str) -> str:
        return self.inner.digest(name)

    def locate(self, name: str) -> StoredEntry | None:
        return self.inner.locate(name)


def installer(tmp_path: Path) -> tuple[Manifest, PayloadSource, list[tuple[PackageInfo, bytes]]]:
    channel = tmp_path / "channel"
    locked = [
        locked_package(write_conda_package(channel, n, "1.0", files={f"share/{n}": n}))
        for n in ("alpha", "beta")
    ]
    manifest = core_manifest([p for p, _ in locked])
    blob = tmp_path / "installer.bin"
    with open(blob, "wb") as out:
        write_payload(out, [(p.entry, channel / p.entry) for p, _ in locked], manifest.to_dict())
    return manifest, PayloadSource(read_payload(blob)), locked


def test_an_installer_file_is_unpacked_by_workers_when_there_are_any(tmp_path: Path) -> None:
    manifest, source, _ = installer(tmp_path)
    stager = choose_stager(manifest, source, 2)
    assert isinstance(stager, WorkerStager)
    assert [(p.entry, s.entry.name) for p, s in stager.stored] == [
        (p.entry, p.entry) for p in manifest.packages
    ]
    assert isinstance(choose_stager(manifest, source, 0), CopyStager)
    assert isinstance(choose_stager(manifest, ForwardingSource(source), 2), WorkerStager)


def test_a_source_in_memory_is_copied(tmp_path: Path) -> None:
    manifest, _, locked = installer(tmp_path)
    memory = MemorySource(manifest, {p.entry: blob for p, blob in locked})
    assert isinstance(choose_stager(manifest, memory, 2), CopyStager)


def test_what_an_update_keeps_is_not_staged(tmp_path: Path) -> None:
    manifest, source, _ = installer(tmp_path)
    alpha = manifest.packages[0].entry
    stager = choose_stager(manifest, source, 2, frozenset({alpha}))
    assert isinstance(stager, WorkerStager)
    assert [p.entry for p, _ in stager.stored] == [manifest.packages[1].entry]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers unpack on Linux")
def test_nothing_to_stage_starts_no_worker(tmp_path: Path) -> None:
    manifest, source, _ = installer(tmp_path)
    everything = frozenset(p.entry for p in manifest.packages)
    reporter = RecordingReporter()
    staged = choose_stager(manifest, source, 2, everything).stage(tmp_path / "stage", reporter)
    assert reporter.totals["Unpacking"] == 0 and reporter.messages == []
    assert [str(r.name.normalized) for r in staged.records] == ["alpha", "beta"]
    assert not (tmp_path / "stage" / "cache").exists()
