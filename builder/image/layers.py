"""An environment folder cut into reproducible layers: one per package under a budget, the
smaller ones grouped, and a top layer for what the install writes across packages.

A layer's tar has sorted names, every parent folder listed, mtime ``SOURCE_DATE_EPOCH`` (or
0), uid/gid 0 and no owner names, modes normalised to 0755/0644 (what the file's owner may
execute decides), no atime/ctime records, and is gzipped at a fixed level with no name or
time in the gzip header. So a package's layer depends only on that package's files: the
next version of an environment reuses every layer whose package did not change.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from lockship.builder.image.oci import LAYER_GZIP, BlobStore, Descriptor

#: every image layer's gzip level; fixed, since it is part of the layer's digest. Level 1
#: compresses 3-4x faster than 6 here for a few percent more bytes (measured on the
#: benchmark's layers: 31 vs 8 MB/s, 63.6 vs 61.0 % of the tar)
GZIP_LEVEL = 1
#: layers an image may have in all (base included): engines accept about 127
MAX_LAYERS = 100


@dataclass(frozen=True)
class LayerGroup:
    """What goes into one layer: a name (for messages) and paths relative to the folder."""

    name: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    #: sha256 of the uncompressed tar (the config's ``rootfs.diff_ids``)
    diff_id: str
    group: LayerGroup


def package_files(folder: Path) -> dict[str, tuple[list[str], int]]:
    """Each package's files (from ``conda-meta``), with their ``.pyc`` and its record, and
    the bytes they take: ``name -> (paths, size)``."""
    owned: dict[str, tuple[list[str], int]] = {}
    for meta in sorted((folder / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        paths = [f"conda-meta/{meta.name}"]
        for file in record.get("files", []):
            paths.append(file)
            if file.endswith(".py"):
                paths += _compiled(folder, PurePosixPath(file))
        paths = [p for p in paths if (folder / p).is_symlink() or (folder / p).exists()]
        size = sum((folder / p).lstat().st_size for p in paths)
        owned[str(record["name"])] = (paths, size)
    return owned


def _compiled(folder: Path, source: PurePosixPath) -> list[str]:
    cache = source.parent / "__pycache__"
    if not (folder / cache).is_dir():
        return []
    return sorted(
        str(cache / p.name) for p in (folder / cache).glob(f"{source.stem}.*.pyc") if p.is_file()
    )


def plan_layers(folder: Path, budget: int) -> list[LayerGroup]:
    """The layers for ``folder``, at most ``budget`` (at least 2): the largest packages get a
    layer each, the others are grouped in name order into layers of similar size, and one top
    layer takes every path no package owns (metadata, activation, wheels)."""
    budget = max(budget, 2)
    owned = package_files(folder)
    by_size = sorted(owned, key=lambda n: (-owned[n][1], n))
    groups: list[LayerGroup] = []
    if len(owned) <= budget - 1:
        alone, rest = by_size, []
    else:
        # a few layers for the grouped small packages, the rest of the budget one per package
        shared = max(1, min(8, (budget - 1) // 4))
        alone, rest = by_size[: budget - 1 - shared], sorted(by_size[budget - 1 - shared :])
        groups += _grouped(rest, owned, shared)
    groups += [LayerGroup(n, tuple(owned[n][0])) for n in sorted(alone)]
    claimed = {p for g in groups for p in g.paths}
    top = [p for p in _all_paths(folder) if p not in claimed]
    groups.append(LayerGroup("environment", tuple(top)))
    return groups


def _grouped(
    names: Sequence[str], owned: dict[str, tuple[list[str], int]], count: int
) -> list[LayerGroup]:
    total = sum(owned[n][1] for n in names) or 1
    groups: list[LayerGroup] = []
    current: list[str] = []
    size = 0
    for name in names:
        current.append(name)
        size += owned[name][1]
        if size >= total / count * (len(groups) + 1) and len(groups) < count - 1:
            groups.append(_group(current, owned))
            current = []
    if current:
        groups.append(_group(current, owned))
    return groups


def _group(names: list[str], owned: dict[str, tuple[list[str], int]]) -> LayerGroup:
    paths = tuple(p for n in names for p in owned[n][0])
    return LayerGroup(f"{names[0]}..{names[-1]} ({len(names)} packages)", paths)


def _all_paths(folder: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        relative = Path(root).relative_to(folder)
        for name in sorted(files) + [d for d in dirs if Path(root, d).is_symlink()]:
            yield (relative / name).as_posix()
        for d in dirs:
            # an empty folder is content too
            if not Path(root, d).is_symlink() and not os.listdir(Path(root, d)):
                yield (relative / d).as_posix() + "/"


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _Hashing:
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: _Sink | None) -> None:
        self.target, self.sha256, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        if self.target is not None:
            self.target.write(data)
        return len(data)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()


def write_layer(
    store: BlobStore, folder: Path, root: PurePosixPath, group: LayerGroup, mtime: int
) -> Layer:
    """Write ``group``'s paths of ``folder`` as a gzipped layer placing them under ``root``
    (the image's prefix), into ``store``."""
    store.folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".layer-", suffix=".part", dir=store.folder)
    partial = Path(name)
    with os.fdopen(fd, "wb") as out:
        compressed = _Hashing(out)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0
        ) as gz:
            plain = _Hashing(gz)
            write_tar(plain, folder, root, group.paths, mtime)
    digest = "sha256:" + compressed.sha256.hexdigest()
    target = store.path(digest)
    os.replace(partial, target)
    descriptor = Descriptor(LAYER_GZIP, digest, compressed.size)
    return Layer(descriptor, "sha256:" + plain.sha256.hexdigest(), group)


def write_layers(
    store: BlobStore,
    folder: Path,
    root: PurePosixPath,
    groups: Sequence[LayerGroup],
    mtime: int,
    on_done: Callable[[], None] = lambda: None,
) -> list[Layer]:
    """:func:`write_layer` for each group, in a few threads (zlib compresses without the GIL,
    so layers are written on every core); the layers in the groups' order."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(write_layer, store, folder, root, g, mtime) for g in groups]
        for future in as_completed(futures):
            future.result()
            on_done()
        return [f.result() for f in futures]


def write_tar(
    out: _Hashing, folder: Path, root: PurePosixPath, paths: Iterable[str], mtime: int
) -> None:
    entries: dict[str, str | None] = {}
    for name, relative in _with_parents(root, paths):
        if relative is not None or name not in entries:
            entries[name] = relative
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name in sorted(entries):
            relative = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if relative is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            path = folder / relative.rstrip("/")
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, str(path.readlink())
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)


def _with_parents(root: PurePosixPath, paths: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """``(tar name, path relative to the folder or None for a parent folder)``, with every
    folder from ``/`` down to each path."""
    top = root.relative_to("/")
    for parent in reversed(top.parents[:-1] if top.parents else []):
        yield str(parent), None
    yield str(top), None
    for path in paths:
        relative = PurePosixPath(path.rstrip("/"))
        for parent in reversed(relative.parents[:-1]):
            yield str(top / parent), None
        yield str(top / relative), path
