"""An environment folder cut into reproducible layers: one per package under a budget, the
smaller ones grouped, and a top layer for what the install writes across packages.

A layer's tar has sorted names, every parent folder listed, mtime ``SOURCE_DATE_EPOCH`` (or
0), uid/gid 0 and no owner names, modes normalised to 0755/0644 (what the file's owner may
execute decides), no atime/ctime records, and is gzipped at a fixed level with no name or
time in the gzip header. So a package's layer depends only on that package's files: the
next version of an environment reuses every layer whose package did not change.

A layer is written in one pass (:class:`LayerWriter`): the tar's bytes are hashed (its
``diff_id``), deflated by ISA-L, and the gzip bytes hashed (its digest) on their way to the
file. Finished blobs are kept in a cache (:class:`LayerCache`) keyed by what decides their
bytes, so a rebuild, and the next version, compress only the layers that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from lockship.builder.image.oci import LAYER_GZIP, BlobStore, Descriptor, ImageError

#: layers an image may have in all (base included): engines accept about 127
MAX_LAYERS = 100
#: how layers are written (the tar's form, the gzip framing, the blocks): part of the layer
#: cache's key, so a change here that changes a layer's bytes must bump it
LAYER_FORMAT = 2
#: the tar goes to the compressor, and to the disk, in blocks of this size
BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class LayerGroup:
    """What goes into one layer: a name (for messages), paths relative to the folder, and
    the bytes they take (to start the largest layers first)."""

    name: str
    paths: tuple[str, ...]
    size: int = 0
    #: see :func:`_shape` (empty: no hint)
    shape: str = ""


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    #: sha256 of the uncompressed tar (the config's ``rootfs.diff_ids``)
    diff_id: str
    group: LayerGroup


def package_files(folder: Path) -> dict[str, tuple[list[str], int]]:
    """Each package's files (from ``conda-meta``), with their ``.pyc`` and its record, and
    the bytes they take: ``name -> (paths, size)``."""
    owned, _ = _package_files(folder)
    return owned


def _package_files(folder: Path) -> tuple[dict[str, tuple[list[str], int]], dict[str, int]]:
    """:func:`package_files`, and the size of each path found (``lstat``: a link's own)."""
    base = str(folder)
    sizes: dict[str, int] = {}
    caches: dict[str, list[str]] = {}
    owned: dict[str, tuple[list[str], int]] = {}
    for meta in sorted((folder / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        paths = [f"conda-meta/{meta.name}"]
        for file in record.get("files", []):
            paths.append(file)
            if file.endswith(".py"):
                paths += _compiled(base, file, caches)
        found = [p for p in paths if _measure(base, p, sizes)]
        owned[str(record["name"])] = (found, sum(sizes[p] for p in found))
    return owned, sizes


def _measure(base: str, path: str, sizes: dict[str, int]) -> bool:
    """Whether ``path`` is there (a dangling link is), its size noted in ``sizes``."""
    if path not in sizes:
        try:
            sizes[path] = os.lstat(f"{base}/{path.rstrip('/')}").st_size
        except OSError:
            return False
    return True


def _compiled(base: str, source: str, caches: dict[str, list[str]]) -> list[str]:
    """The ``__pycache__/STEM.*.pyc`` files of ``source`` (each folder listed once)."""
    parent, _, name = source.rpartition("/")
    stem = name[: -len(".py")]
    cache = f"{parent}/__pycache__" if parent else "__pycache__"
    if cache not in caches:
        try:
            with os.scandir(f"{base}/{cache}") as entries:
                caches[cache] = sorted(e.name for e in entries if e.is_file())
        except OSError:
            caches[cache] = []
    return [
        f"{cache}/{n}"
        for n in caches[cache]
        if n.startswith(f"{stem}.") and n.endswith(".pyc") and len(n) >= len(stem) + 5
    ]


def plan_layers(folder: Path, budget: int) -> list[LayerGroup]:
    """The layers for ``folder``, at most ``budget`` (at least 2): the largest packages get a
    layer each, the others are grouped in name order into layers of similar size, and one top
    layer takes every path no package owns (metadata, activation, wheels)."""
    budget = max(budget, 2)
    owned, sizes = _package_files(folder)
    by_size = sorted(owned, key=lambda n: (-owned[n][1], n))
    groups: list[LayerGroup] = []
    if len(owned) <= budget - 1:
        alone, rest = by_size, []
    else:
        # a few layers for the grouped small packages, the rest of the budget one per package
        shared = max(1, min(8, (budget - 1) // 4))
        alone, rest = by_size[: budget - 1 - shared], sorted(by_size[budget - 1 - shared :])
        groups += _grouped(rest, owned, shared)
    groups += [LayerGroup(n, tuple(owned[n][0]), owned[n][1]) for n in sorted(alone)]
    claimed = {p for g in groups for p in g.paths}
    base = str(folder)
    top = [p for p in _all_paths(folder) if p not in claimed and _measure(base, p, sizes)]
    groups.append(LayerGroup("environment", tuple(top), sum(sizes[p] for p in top)))
    return [replace(g, shape=_shape(g.paths, sizes)) for g in groups]


def _shape(paths: Sequence[str], sizes: dict[str, int]) -> str:
    """A digest of a group's paths and their sizes: a hint (only) that its tar may be in the
    layer cache."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path}\0{sizes[path]}\n".encode())
    return digest.hexdigest()


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
    size = sum(owned[n][1] for n in names)
    return LayerGroup(f"{names[0]}..{names[-1]} ({len(names)} packages)", paths, size)


def _all_paths(folder: Path) -> Iterator[str]:
    base = str(folder)
    for root, dirs, files in os.walk(base):
        dirs.sort()
        relative = root[len(base) + 1 :]
        prefix = f"{relative}/" if relative else ""
        linked = [d for d in dirs if os.path.islink(f"{root}/{d}")]  # noqa: PTH114 (strings)
        for name in sorted(files) + linked:
            yield prefix + name
        for d in dirs:
            # an empty folder is content too
            if d not in linked and not os.listdir(f"{root}/{d}"):
                yield f"{prefix}{d}/"


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class Compression:
    """What turns a layer's tar into its blob: the media type, the library (and the C library
    inside it) and the level. With :data:`LAYER_FORMAT` and the tar's sha256 it decides the
    blob's bytes, so it is part of the layer cache's key."""

    media_type: str
    library: str
    level: int

    @property
    def key(self) -> str:
        return f"{self.media_type} {self.library} level {self.level} blocks {BLOCK_SIZE}"


#: zlib at level 1. Its bytes are the same on every CPU (x86_64 with or without SSE4.2,
#: aarch64) and from zlib 1.2.11 to 1.2.13; ISA-L, 3-4x faster, writes other bytes on each of
#: those three CPUs, which would break "the same lock gives the same digest on any machine"
GZIP = Compression(LAYER_GZIP, f"zlib {zlib.ZLIB_RUNTIME_VERSION}", 1)
#: the gzip member's header: no name, mtime 0, extra flags 4 (fastest), OS 255 (unknown)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"


class LayerWriter:
    """The one pass that makes a layer: tar bytes in; their sha256 (the ``diff_id``), then
    gzip (zlib's raw deflate in a gzip member written here), then the blob's sha256, on the
    way to ``target``. With no ``target`` it only hashes the tar.

    The tar is handed to the compressor in blocks of :data:`BLOCK_SIZE` whatever the sizes
    it is written in, so the blob depends on the tar's bytes alone.
    """

    def __init__(self, target: _Sink | None) -> None:
        self.target = target
        self.plain, self.plain_size = hashlib.sha256(), 0
        self.blob, self.blob_size = hashlib.sha256(), 0
        self._pending = bytearray()
        self._crc = 0
        self._deflate = (
            zlib.compressobj(GZIP.level, zlib.DEFLATED, -zlib.MAX_WBITS)
            if target is not None
            else None
        )
        self._emit(_GZIP_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = len(data)
        if self._deflate is None:  # only hashing: the pieces' sizes do not matter
            self.plain.update(data)
            self.plain_size += size
            return size
        self._pending += data
        if len(self._pending) >= BLOCK_SIZE:
            whole = len(self._pending) - len(self._pending) % BLOCK_SIZE
            with memoryview(self._pending) as view:
                for start in range(0, whole, BLOCK_SIZE):
                    self._block(view[start : start + BLOCK_SIZE])
            del self._pending[:whole]
        return size

    def tell(self) -> int:
        """The tar's size so far (tarfile asks)."""
        return self.plain_size + len(self._pending)

    def close(self) -> None:
        """Compress what is left and end the gzip member."""
        with memoryview(self._pending) as rest:
            self._block(rest)
        self._pending.clear()
        if self._deflate is not None:
            self._emit(self._deflate.flush())
            self._emit(struct.pack("<II", self._crc, self.plain_size & 0xFFFFFFFF))

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.plain.hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + self.blob.hexdigest()

    def _block(self, block: memoryview) -> None:
        self.plain.update(block)
        self.plain_size += len(block)
        if self._deflate is not None:
            self._crc = zlib.crc32(block, self._crc)
            self._emit(self._deflate.compress(block))

    def _emit(self, data: bytes) -> None:
        if self.target is not None and data:
            self.blob.update(data)
            self.blob_size += len(data)
            self.target.write(data)


@dataclass(frozen=True)
class LayerCache:
    """Finished layer blobs kept between builds (under the build cache): ``KEY/DIGEST``, the
    key a sha256 of the layer format, the compression and the tar's sha256: all that decides
    a blob's bytes. A rebuild, or the next version, hashes each layer's tar and compresses
    only the tars it has not seen. ``shapes/`` notes the groups' shapes kept (a hint that
    saves hashing a layer that will not be found)."""

    folder: Path

    def key(
        self, diff_id: str, compression: Compression = GZIP, layer_format: int = LAYER_FORMAT
    ) -> str:
        text = f"lockship layer format {layer_format}\n{compression.key}\n{diff_id}\n"
        return hashlib.sha256(text.encode()).hexdigest()

    def find(self, key: str, media_type: str) -> tuple[Descriptor, Path] | None:
        """The cached blob for ``key``: its descriptor and file, if there is one."""
        try:
            names = os.listdir(self.folder / key)
        except OSError:
            return None
        for name in names:
            path = self.folder / key / name
            if len(name) == 64 and path.is_file():
                return Descriptor(media_type, f"sha256:{name}", path.stat().st_size), path
        return None

    def keep(self, key: str, descriptor: Descriptor, blob: Path, shape: str = "") -> None:
        """Add ``blob`` (hard-linked where it can be) under ``key``, and note ``shape`` as
        seen; a cache that cannot be written is no reason to fail the build, so errors are
        ignored."""
        with suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=self.folder))
            try:
                _link_or_copy(blob, partial / descriptor.digest.partition(":")[2])
                partial.rename(self.folder / key)  # another build may have won: fine
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        if shape:
            with suppress(OSError):
                (self.folder / "shapes").mkdir(exist_ok=True)
                (self.folder / "shapes" / shape).touch()

    def seen(self, shape: str) -> bool:
        """Whether a layer of this :attr:`LayerGroup.shape` was kept before (a hint only)."""
        return (self.folder / "shapes" / shape).exists()

    def keys(self) -> list[str]:
        """The keys of the blobs kept."""
        try:
            return sorted(n for n in os.listdir(self.folder) if len(n) == 64)
        except OSError:
            return []


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_layer(
    store: BlobStore,
    folder: Path,
    root: PurePosixPath,
    group: LayerGroup,
    mtime: int,
    cache: LayerCache | None = None,
) -> Layer:
    """Write ``group``'s paths of ``folder`` as a gzipped layer placing them under ``root``
    (the image's prefix), into ``store``; from ``cache`` when it holds the blob for the same
    tar (then the tar is only hashed, not compressed).

    The tar is hashed first only when the cache has seen a group of the same paths and sizes
    (:attr:`LayerGroup.shape`): a layer it has never seen is compressed in one pass."""
    hashed = None
    if cache is not None and (not group.shape or cache.seen(group.shape)):
        hashed = LayerWriter(None)
        write_tar(hashed, folder, root, group.paths, mtime)
        hashed.close()
        found = cache.find(cache.key(hashed.diff_id), GZIP.media_type)
        if found is not None:
            descriptor, blob = found
            return Layer(store.put_file(descriptor, blob), hashed.diff_id, group)
    store.folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".layer-", suffix=".part", dir=store.folder)
    partial = Path(name)
    try:
        with open(fd, "wb", buffering=BLOCK_SIZE) as out:
            writer = LayerWriter(out)
            write_tar(writer, folder, root, group.paths, mtime)
            writer.close()
        target = store.path(writer.digest)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if hashed is not None and hashed.diff_id != writer.diff_id:
        raise ImageError(f"the files of the layer {group.name} changed while it was written")
    descriptor = Descriptor(GZIP.media_type, writer.digest, writer.blob_size)
    if cache is not None:
        cache.keep(cache.key(writer.diff_id), descriptor, target, group.shape)
    return Layer(descriptor, writer.diff_id, group)


def write_layers(
    store: BlobStore,
    folder: Path,
    root: PurePosixPath,
    groups: Sequence[LayerGroup],
    mtime: int,
    on_done: Callable[[], None] = lambda: None,
    cache: LayerCache | None = None,
) -> list[Layer]:
    """:func:`write_layer` for each group, in a few threads (ISA-L and hashlib work without
    the GIL, so layers are written on every core); the layers in the groups' order. The
    largest groups start first, so a big layer does not finish alone at the end."""
    order = sorted(range(len(groups)), key=lambda i: -groups[i].size)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {
            i: pool.submit(write_layer, store, folder, root, groups[i], mtime, cache) for i in order
        }
        for future in as_completed(futures.values()):
            future.result()
            on_done()
        return [futures[i].result() for i in range(len(groups))]


def write_tar(
    out: LayerWriter, folder: Path, root: PurePosixPath, paths: Iterable[str], mtime: int
) -> None:
    """The layer's tar: sorted names, every parent folder, the fixed owner, time and modes.

    The bytes are those ``tarfile.open(mode="w", format=PAX_FORMAT)`` writes: each entry's
    header made by tarfile's own ``TarInfo.tobuf``, the data padded to 512 bytes, two empty
    blocks and the padding to a 10240-byte record at the end. They are written here rather
    than through ``TarFile.addfile``, which copies each entry and keeps them all, and names
    are strings rather than pathlib objects: an environment has tens of thousands of files."""
    entries: dict[str, str | None] = {}
    for name, relative in _with_parents(root, paths):
        if relative is not None or name not in entries:
            entries[name] = relative
    base = str(folder)
    written = 0

    def put(info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        nonlocal written
        header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        out.write(header)
        written += len(header)
        if data is not None:
            left = info.size
            while left:
                chunk = data.read(min(BLOCK_SIZE, left))
                if not chunk:
                    raise ImageError(f"{info.name} changed while its layer was written")
                out.write(chunk)
                left -= len(chunk)
            padding = -info.size % tarfile.BLOCKSIZE
            out.write(tarfile.NUL * padding)
            written += info.size + padding

    for name in sorted(entries):
        relative = entries[name]
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
        if relative is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            put(info)
            continue
        path = f"{base}/{relative.rstrip('/')}"
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            info.type, info.mode = tarfile.SYMTYPE, 0o777
            info.linkname = os.readlink(path)  # noqa: PTH115 (strings, see above)
            put(info)
        elif stat.S_ISDIR(st.st_mode):
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            put(info)
        else:
            info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
            info.size = st.st_size
            with open(path, "rb") as f:
                put(info, f)
    end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
    written += len(end)
    out.write(end + tarfile.NUL * (-written % tarfile.RECORDSIZE))


def _with_parents(root: PurePosixPath, paths: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """``(tar name, path relative to the folder or None for a parent folder)``, with every
    folder from ``/`` down to each path."""
    top = root.relative_to("/")
    for parent in reversed(top.parents[:-1] if top.parents else []):
        yield str(parent), None
    yield str(top), None
    prefix = f"{top}/"
    for path in paths:
        relative = _normal(path)
        end = relative.find("/")
        while end != -1:
            yield prefix + relative[:end], None
            end = relative.find("/", end + 1)
        yield prefix + relative, path


def _normal(path: str) -> str:
    """``path`` as pathlib would spell it (no trailing, doubled or ``.`` parts)."""
    path = path.rstrip("/")
    if "//" in path or path.startswith("./") or "/./" in path or path.endswith("/."):
        return str(PurePosixPath(path))
    return path
