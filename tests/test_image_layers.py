"""Layers of an environment folder: reproducible bytes, and the layer budget."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path, PurePosixPath

from lockship.builder.image.layers import LayerGroup, plan_layers, write_layer
from lockship.builder.image.oci import BlobStore


def _environment(folder: Path, packages: dict[str, dict[str, str]], umask_mode: int) -> Path:
    for name, files in packages.items():
        for path, text in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(umask_mode | (0o111 if path.startswith("bin/") else 0))
        record = {"name": name, "files": sorted(files)}
        (folder / "conda-meta").mkdir(parents=True, exist_ok=True)
        (folder / "conda-meta" / f"{name}-1-0.json").write_text(json.dumps(record))
    (folder / "bin").mkdir(exist_ok=True)
    (folder / "bin" / "link").symlink_to("tool")
    (folder / "activate.sh").write_text("export X=1\n")
    return folder


PACKAGES = {
    "tool": {"bin/tool": "#!/bin/sh\necho tool\n", "share/tool/a.txt": "a" * 5000},
    "data": {"share/data/big.txt": "d" * 20000},
    "lib": {"lib/python3.11/site-packages/m.py": "X = 1\n"},
}


def _members(store: BlobStore, digest: str) -> list[tarfile.TarInfo]:
    data = gzip.decompress(store.path(digest).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_a_layer_is_the_same_bytes_from_any_folder_mode_or_time(tmp_path: Path) -> None:
    digests = []
    for i, mode in enumerate((0o644, 0o664)):
        folder = _environment(tmp_path / f"f{i}" / ("deeper/" * i) / "env", PACKAGES, mode)
        for path in folder.rglob("*"):
            os.utime(path, (1000 + i, 2000 + i), follow_symlinks=False)
        store = BlobStore(tmp_path / f"layout{i}")
        groups = plan_layers(folder, budget=10)
        layers = [write_layer(store, folder, PurePosixPath("/opt/app"), g, 42) for g in groups]
        digests.append([(layer.descriptor.digest, layer.diff_id) for layer in layers])
    assert digests[0] == digests[1]
    members = _members(store, digests[1][-1][0])
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 42)}
    assert "opt" in [m.name for m in members] and "opt/app" in [m.name for m in members]


def test_each_package_its_layer_and_the_rest_on_top(tmp_path: Path) -> None:
    folder = _environment(tmp_path / "env", PACKAGES, 0o644)

    groups = plan_layers(folder, budget=10)

    assert [g.name for g in groups] == ["data", "lib", "tool", "environment"]
    tool = next(g for g in groups if g.name == "tool")
    assert set(tool.paths) == {"conda-meta/tool-1-0.json", "bin/tool", "share/tool/a.txt"}
    assert set(groups[-1].paths) == {"activate.sh", "bin/link"}


def test_past_the_budget_small_packages_share_layers(tmp_path: Path) -> None:
    many = {f"p{i:02d}": {f"share/p{i:02d}/f.txt": "x" * (100 * (i + 1))} for i in range(40)}
    folder = _environment(tmp_path / "env", many, 0o644)

    groups = plan_layers(folder, budget=12)

    assert len(groups) <= 12
    paths = [p for g in groups for p in g.paths]
    assert len(paths) == len(set(paths))  # every path in one layer
    assert set(paths) == {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()
    }
    alone = [g.name for g in groups if not g.name.endswith("packages)")][:-1]
    assert alone == sorted(f"p{i:02d}" for i in range(40 - len(alone), 40))  # the largest


def test_an_empty_folder_is_kept(tmp_path: Path) -> None:
    folder = _environment(tmp_path / "env", PACKAGES, 0o644)
    (folder / "var" / "run").mkdir(parents=True)
    store = BlobStore(tmp_path / "layout")

    layer = write_layer(
        store, folder, PurePosixPath("/opt/app"), LayerGroup("top", ("var/run/",)), 0
    )

    names = {m.name: m for m in _members(store, layer.descriptor.digest)}
    assert names["opt/app/var/run"].isdir()
