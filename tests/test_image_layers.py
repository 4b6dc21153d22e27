"""Layers of an environment folder: reproducible bytes, and the layer budget."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
from lockship.builder.image.layers import (
    GZIP,
    LAYER_FORMAT,
    LayerCache,
    LayerGroup,
    LayerWriter,
    plan_layers,
    write_layer,
    write_tar,
)
from lockship.builder.image.oci import (
    LAYER_ZSTD,
    BlobStore,
    ImageError,
    pack_layout,
    write_layout_index,
)


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


class _Chunks:
    """A file-like sink that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_the_one_pass_writer_gives_what_gzip_and_hashlib_give_in_two(tmp_path: Path) -> None:
    rng = random.Random(3)
    tar = b"".join(
        rng.randbytes(rng.randrange(1, 300_000)) + b"text " * rng.randrange(1, 90_000)
        for _ in range(12)
    )
    outputs = []
    for pieces in (1, 7, 4096, 3 << 20):  # however tarfile happens to write, the same bytes
        sink = _Chunks()
        writer = LayerWriter(sink)
        for start in range(0, len(tar), pieces):
            writer.write(tar[start : start + pieces])
        writer.close()
        outputs.append((bytes(sink.data), writer.diff_id, writer.digest, writer.blob_size))
    assert len(set(outputs)) == 1
    blob, diff_id, digest, size = outputs[0]
    # the two-pass reference: the standard library's gzip reads it, hashlib hashes each side
    assert gzip.decompress(blob) == tar
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert size == len(blob)
    # the header gzip.GzipFile writes at level 1 with no name and no time (as layers had)
    reference = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=reference, compresslevel=1, mtime=0):
        pass
    assert blob[:10] == reference.getvalue()[:10]
    hashed_only = LayerWriter(None)
    hashed_only.write(tar)
    hashed_only.close()
    assert (hashed_only.diff_id, hashed_only.blob_size) == (diff_id, 0)


def _golden_tar() -> bytes:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(700)]
    text = " ".join(rng.choices(words, k=400_000)).encode()
    return text + rng.randbytes(1_000_000) + bytes(300_000) + text[:900_000]


#: the blob of :func:`_golden_tar`, as zlib 1.2.11 and 1.2.13 write it on x86_64 (with and
#: without SSE4.2) and on aarch64 alike: a layer's digest does not depend on the machine
GOLDEN_BLOB = "sha256:73ac1603caba939188b11c17710e8e39f81aed3be19c0dc1f5c93e47f3daba33"


def test_a_layer_blob_is_the_same_bytes_on_every_machine() -> None:
    writer = LayerWriter(_Chunks())
    writer.write(_golden_tar())
    writer.close()
    assert writer.digest == GOLDEN_BLOB, (zlib.ZLIB_RUNTIME_VERSION, writer.digest)


def test_a_written_layer_is_a_standard_gzip_of_its_tar(tmp_path: Path) -> None:
    folder = _environment(tmp_path / "env", PACKAGES, 0o644)
    store = BlobStore(tmp_path / "layout")
    group = plan_layers(folder, budget=10)[0]

    layer = write_layer(store, folder, PurePosixPath("/opt/app"), group, 0)

    blob = store.path(layer.descriptor.digest).read_bytes()
    assert layer.descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.descriptor.size == len(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert [p.name for p in store.folder.iterdir()] == [layer.descriptor.digest[7:]]


def test_the_cache_key_changes_with_each_thing_that_decides_a_blob(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    diff_id = "sha256:" + "1" * 64
    keys = {
        cache.key(diff_id),
        cache.key("sha256:" + "2" * 64),
        cache.key(diff_id, replace(GZIP, level=GZIP.level + 1)),
        cache.key(diff_id, replace(GZIP, library=GZIP.library + ".post1")),
        cache.key(diff_id, replace(GZIP, media_type=LAYER_ZSTD)),
        cache.key(diff_id, layer_format=LAYER_FORMAT + 1),
    }
    assert len(keys) == 6
    assert cache.key(diff_id) == LayerCache(tmp_path / "elsewhere").key(diff_id)
    assert GZIP.library == f"zlib {zlib.ZLIB_RUNTIME_VERSION}"


def test_a_rebuild_takes_the_layer_from_the_cache_and_a_changed_file_misses(
    tmp_path: Path,
) -> None:
    folder = _environment(tmp_path / "env", PACKAGES, 0o644)
    cache = LayerCache(tmp_path / "cache")
    tool = next(g for g in plan_layers(folder, budget=10) if g.name == "tool")
    root = PurePosixPath("/opt/app")

    assert not cache.seen(tool.shape)
    first = write_layer(BlobStore(tmp_path / "l1"), folder, root, tool, 0, cache)
    assert cache.seen(tool.shape)  # so the next build hashes the tar before compressing
    second_store = BlobStore(tmp_path / "l2")
    second = write_layer(second_store, folder, root, tool, 0, cache)
    (folder / "share/tool/a.txt").write_text("b" * 5000)  # same size, other bytes
    third = write_layer(BlobStore(tmp_path / "l3"), folder, root, tool, 0, cache)
    fourth = write_layer(BlobStore(tmp_path / "l4"), folder, root, tool, 7, cache)  # mtime

    assert second == first
    found = cache.find(cache.key(first.diff_id), first.descriptor.media_type)
    assert found is not None and found[0] == first.descriptor
    # the second build's blob is the cached file itself: nothing was compressed again
    assert second_store.path(second.descriptor.digest).samefile(found[1])
    assert len({first.diff_id, third.diff_id, fourth.diff_id}) == 3
    assert len({first.descriptor.digest, third.descriptor.digest, fourth.descriptor.digest}) == 3
    assert len(cache.keys()) == 3
    for layer in (third, fourth):
        blob = BlobStore(tmp_path / ("l3" if layer is third else "l4")).path(
            layer.descriptor.digest
        )
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob.read_bytes())).hexdigest() == (
            layer.diff_id
        )


def test_a_cached_blob_changed_on_disk_stops_the_archive(tmp_path: Path) -> None:
    """The cache's blob is taken by name; its bytes are checked when the archive is written."""
    folder = _environment(tmp_path / "env", PACKAGES, 0o644)
    cache = LayerCache(tmp_path / "cache")
    tool = next(g for g in plan_layers(folder, budget=10) if g.name == "tool")
    root = PurePosixPath("/opt/app")
    first = write_layer(BlobStore(tmp_path / "l1"), folder, root, tool, 0, cache)
    found = cache.find(cache.key(first.diff_id), first.descriptor.media_type)
    assert found is not None
    damaged = bytearray(found[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # a flipped bit: same size, same name
    found[1].unlink()  # the first layout holds a hard link to it
    found[1].write_bytes(damaged)
    store = BlobStore(tmp_path / "l2")
    again = write_layer(store, folder, root, tool, 0, cache)
    assert again == first  # taken from the cache by name
    write_layout_index(store.layout, again.descriptor)
    with pytest.raises(ImageError, match=r"blob sha256:[0-9a-f]{64} has other bytes"):
        pack_layout(store.layout, io.BytesIO())
    # the same layout with the blob written afresh packs
    fresh = BlobStore(tmp_path / "l3")
    write_layer(fresh, folder, root, tool, 0, LayerCache(tmp_path / "none"))
    write_layout_index(fresh.layout, again.descriptor)
    out = io.BytesIO()
    assert pack_layout(fresh.layout, out) == hashlib.sha256(out.getvalue()).hexdigest()


def test_a_layer_tar_is_what_tarfile_writes_for_its_entries(tmp_path: Path) -> None:
    folder = tmp_path / "env"
    deep = "lib/" + "/".join(["a-rather-long-folder-name"] * 5) + "/module.py"  # > 100 bytes
    files = {deep: "X = 1\n", "bin/tool": "#!/bin/sh\n", "share/caf\u00e9.txt": "\u00e9\n"}
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    (folder / "bin/tool").chmod(0o755)
    (folder / "bin/link").symlink_to("tool")
    (folder / "var/empty").mkdir(parents=True)
    (folder / "big.bin").write_bytes(random.Random(5).randbytes(3 * 1024 * 1024 + 17))
    sink = _Chunks()
    writer = LayerWriter(sink)
    paths = [*files, "bin/link", "var/empty/", "big.bin"]

    write_tar(writer, folder, PurePosixPath("/opt/app"), paths, 1700000000)
    writer.close()

    written = gzip.decompress(bytes(sink.data))
    reference = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(written)) as ours,
        tarfile.open(fileobj=reference, mode="w", format=tarfile.PAX_FORMAT) as theirs,
    ):
        members = ours.getmembers()
        for member in members:
            theirs.addfile(member, ours.extractfile(member) if member.isfile() else None)
    assert written == reference.getvalue()
    names = [m.name for m in members]
    assert names == sorted(names) and f"opt/app/{deep}" in names
    assert "opt/app/share/caf\u00e9.txt" in names and "opt/app/var/empty" in names
