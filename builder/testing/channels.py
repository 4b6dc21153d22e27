"""Real conda packages, indexed channels and pixi.lock files, written by hand in a few lines.

``write_conda_package`` writes a ``.conda`` (or ``.tar.bz2``) archive from a dict of file
contents without rattler-build; ``index_channel`` indexes a folder of them with rattler;
``channel_records`` solves against the channel and ``write_pixi_lock`` locks the result.
Everything is offline: a channel is a folder (``file://``) or served on 127.0.0.1.

Archives are byte-for-byte reproducible: members carry a fixed mtime (:data:`ARCHIVE_MTIME`),
uid/gid 0 and no user names.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import hashlib
import io
import json
import posixpath
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rattler
import zstandard
from rattler.index import index_fs

__all__ = [
    "ARCHIVE_MTIME",
    "channel_records",
    "index_channel",
    "write_conda_package",
    "write_pixi_lock",
]

#: Fixed mtime (2024-01-01) for hand-written archives, so they are byte-for-byte reproducible.
ARCHIVE_MTIME = 1_704_067_200


def index_channel(channel_dir: Path, *, write_zst: bool = True, write_shards: bool = True) -> None:
    """Write repodata for a local channel (creates ``noarch/`` if missing)."""
    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel_dir, write_zst=write_zst, write_shards=write_shards, force=True))
    with contextlib.suppress(OSError):  # index_fs leaves an empty scratch folder behind
        (channel_dir / ".tmp").rmdir()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tar_member(
    tar: tarfile.TarFile, kind: str, name: str, payload: bytes | str = b"", mode: int | None = None
) -> None:
    """Add one member to ``tar`` with ``name`` used verbatim (no normalisation)."""
    info = tarfile.TarInfo(name)
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if kind == "file":
        data = payload.encode() if isinstance(payload, str) else payload
        info.size = len(data)
        info.mode = 0o644 if mode is None else mode
        tar.addfile(info, io.BytesIO(data))
        return
    target = payload.decode() if isinstance(payload, bytes) else payload
    if kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
    elif kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = target
        info.mode = 0o644
    elif kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        raise ValueError(f"unknown raw member kind {kind!r}")
    tar.addfile(info)


def _tar_bytes(
    members: Sequence[tuple[str, str, bytes | str, int | None]], compression: str
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, payload, mode in members:
            _tar_member(tar, kind, name, payload, mode)
    raw = buf.getvalue()
    if compression == "zst":
        return zstandard.ZstdCompressor(level=3).compress(raw)
    if compression == "bz2":
        return bz2.compress(raw, 9)
    return raw


def _file_mode(path: str, data: bytes) -> int:
    return 0o755 if path.startswith("bin/") or data.startswith(b"#!") else 0o644


def write_conda_package(
    channel_dir: Path,
    name: str,
    version: str,
    *,
    build: str = "0",
    build_number: int = 0,
    subdir: str = "noarch",
    files: dict[str, bytes | str] | None = None,
    symlinks: dict[str, str] | None = None,
    depends: list[str] | None = None,
    fmt: str = ".conda",
    text_placeholders: dict[str, str] | None = None,
    binary_placeholders: dict[str, str] | None = None,
    raw_members: list[tuple[str, ...]] | None = None,
    extra_index: dict[str, Any] | None = None,
    extra_info: dict[str, bytes | str] | None = None,
) -> Path:
    """Hand-write a conda package into ``channel_dir/<subdir>/`` (no rattler-build involved).

    Returns the archive path (``<name>-<version>-<build><fmt>``, mode 0644). The channel is *not*
    re-indexed: call :func:`index_channel` when done writing packages.

    * ``files``: relative path -> content (``str`` is UTF-8 encoded). Mode 0755 for ``bin/*`` and
      ``#!`` scripts, else 0644.
    * ``symlinks``: relative path -> link target (written verbatim, e.g. ``"tool"`` or
      ``"../lib/x"``).
    * ``text_placeholders`` / ``binary_placeholders``: relative path (must be in ``files``) ->
      the prefix placeholder string that file contains; recorded in paths.json as
      ``file_mode: text|binary`` + ``prefix_placeholder``.
    * ``fmt``: ``".conda"`` (stored zip: metadata.json, info-<stem>.tar.zst, pkg-<stem>.tar.zst)
      or ``".tar.bz2"`` (one tar holding info/ and the files).
    * ``extra_index``: merged last into info/index.json (e.g. ``{"noarch": "python"}``,
      ``{"constrains": [...]}``, or deliberately broken values).
    * ``extra_info``: additional files under ``info/`` (e.g. ``{"link.json": ...}``).
    * ``raw_members``: unchecked tar members for fault tests, appended *after* the regular
      members in the given order; each is a tuple ``(kind, name[, payload[, flags]])``:

      - ``kind``: ``"file"`` (payload = content), ``"symlink"`` / ``"hardlink"`` (payload =
        link target), ``"dir"`` (no payload).
      - ``name``: the tar member name, used verbatim: ``"../escape.txt"``, ``"/tmp/x"``, ...
      - ``flags``: comma-separated; ``"info"`` puts the member in the info tar instead of the
        pkg tar (``.conda`` only); ``"listed"`` also lists it in paths.json (files get their
        real sha256/size, links get ``path_type: softlink``).

      Example - a symlink leading outside, then a file written through it::

          raw_members=[("symlink", "lib/evil", "/tmp/outside"),
                       ("file", "lib/evil/pwned.txt", "gotcha")]
    """
    if fmt not in (".conda", ".tar.bz2"):
        raise ValueError(f"fmt must be '.conda' or '.tar.bz2', not {fmt!r}")
    files = dict(files or {})
    symlinks = dict(symlinks or {})
    placeholders: dict[str, tuple[str, str]] = {}
    for mode_name, mapping in (("text", text_placeholders), ("binary", binary_placeholders)):
        for p, placeholder in (mapping or {}).items():
            if p not in files:
                raise ValueError(f"placeholder given for {p!r}, which is not in files")
            placeholders[p] = (mode_name, placeholder)

    encoded = {p: (c.encode() if isinstance(c, str) else c) for p, c in files.items()}

    pkg_members: list[tuple[str, str, bytes | str, int | None]] = []
    info_extra_members: list[tuple[str, str, bytes | str, int | None]] = []
    paths: list[dict[str, Any]] = []

    for p in sorted(encoded):
        data = encoded[p]
        pkg_members.append(("file", p, data, _file_mode(p, data)))
        entry: dict[str, Any] = {
            "_path": p,
            "path_type": "hardlink",
            "sha256": _sha256(data),
            "size_in_bytes": len(data),
        }
        if p in placeholders:
            entry["file_mode"], entry["prefix_placeholder"] = placeholders[p]
        paths.append(entry)

    for p in sorted(symlinks):
        target = symlinks[p]
        pkg_members.append(("symlink", p, target, None))
        entry = {"_path": p, "path_type": "softlink", "size_in_bytes": len(target.encode())}
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(p), target))
        if resolved in encoded:
            entry["sha256"] = _sha256(encoded[resolved])
        paths.append(entry)

    for raw in raw_members or []:
        if len(raw) < 2:
            raise ValueError(f"raw member needs at least (kind, name): {raw!r}")
        kind, member_name = raw[0], raw[1]
        payload = raw[2] if len(raw) > 2 else ""
        flags = {f.strip() for f in raw[3].split(",")} if len(raw) > 3 else set()
        target_list = info_extra_members if "info" in flags else pkg_members
        mode = _file_mode(member_name, payload.encode()) if kind == "file" else None
        target_list.append((kind, member_name, payload, mode))
        if "listed" in flags:
            if kind == "file":
                data = payload.encode()
                paths.append(
                    {
                        "_path": member_name,
                        "path_type": "hardlink",
                        "sha256": _sha256(data),
                        "size_in_bytes": len(data),
                    }
                )
            elif kind in ("symlink", "hardlink"):
                paths.append(
                    {
                        "_path": member_name,
                        "path_type": "softlink" if kind == "symlink" else "hardlink",
                        "size_in_bytes": len(payload.encode()),
                    }
                )

    index: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": build_number,
        "depends": list(depends or []),
        "license": "BSD-3-Clause",
        "subdir": subdir,
        "timestamp": ARCHIVE_MTIME * 1000,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"
    else:
        platform, _, arch = subdir.partition("-")
        index["platform"] = platform
        index["arch"] = {"64": "x86_64", "32": "x86", "aarch64": "aarch64"}.get(arch, arch)
    index.update(extra_index or {})

    info_files: dict[str, bytes | str] = {
        "info/index.json": json.dumps(index, indent=2, sort_keys=True),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}, indent=2),
        "info/files": "".join(f"{e['_path']}\n" for e in paths),
    }
    for rel, content in (extra_info or {}).items():
        info_files[f"info/{rel}"] = content
    info_members: list[tuple[str, str, bytes | str, int | None]] = [
        ("file", p, c, 0o644) for p, c in info_files.items()
    ]
    info_members += info_extra_members

    stem = f"{name}-{version}-{build}"
    out_dir = channel_dir / subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{stem}{fmt}"
    tmp = out.with_name(out.name + ".part")
    if fmt == ".conda":
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            t = time.gmtime(ARCHIVE_MTIME)
            date = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
            for member_name, data in (
                ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
                (f"info-{stem}.tar.zst", _tar_bytes(info_members, "zst")),
                (f"pkg-{stem}.tar.zst", _tar_bytes(pkg_members, "zst")),
            ):
                zinfo = zipfile.ZipInfo(member_name, date_time=date)
                zinfo.external_attr = 0o644 << 16
                zf.writestr(zinfo, data)
    else:
        tmp.write_bytes(_tar_bytes(info_members + pkg_members, "bz2"))
    tmp.chmod(0o644)
    tmp.replace(out)
    return out


def _channel_package_names(channel_dir: Path, platform: str) -> list[str]:
    names: set[str] = set()
    for subdir in dict.fromkeys((platform, "noarch")):
        repodata = channel_dir / subdir / "repodata.json"
        if not repodata.is_file():
            continue
        data = json.loads(repodata.read_text())
        for key in ("packages", "packages.conda"):
            names.update(rec["name"] for rec in (data.get(key) or {}).values())
    return sorted(names)


def channel_records(
    channel_dir: Path,
    channel_url: str,
    platform: str,
    specs: list[str] | None = None,
    *,
    virtual_packages: Sequence[rattler.GenericVirtualPackage | rattler.VirtualPackage]
    | None = None,
) -> list[rattler.RepoDataRecord]:
    """Solve ``specs`` for ``platform`` against the channel served at ``channel_url``.

    ``specs`` defaults to every package name in ``channel_dir``'s ``<platform>`` and ``noarch``
    repodata. The solve fetches repodata from ``channel_url`` itself (e.g. a
    :class:`ChannelServer` URL, or a ``file://`` URL), so the records' ``url`` and ``channel``
    point there and carry sha256/md5/size from the index. ``virtual_packages`` defaults to the
    detected ones when ``platform`` is this machine's, else none. Records come back sorted
    topologically (dependencies first).
    """
    if specs is None:
        specs = _channel_package_names(channel_dir, platform)
    if virtual_packages is None:
        virtual_packages = (
            rattler.VirtualPackage.detect() if platform == str(rattler.Subdir.current()) else []
        )
    with tempfile.TemporaryDirectory(prefix="lsrepodata-") as cache:
        gateway = rattler.Gateway(cache_dir=Path(cache))
        records = asyncio.run(
            rattler.solve(
                sources=[rattler.Channel(channel_url.rstrip("/"))],
                specs=specs,
                gateway=gateway,
                platforms=[rattler.Subdir(platform), rattler.Subdir("noarch")],
                virtual_packages=list(virtual_packages),
            )
        )
    missing = [r.file_name for r in records if r.sha256 is None]
    if missing:
        raise RuntimeError(f"records without sha256: {missing}")
    # sort_topologically hands back plain PackageRecords: map them back by (unique) name.
    by_name = {r.name.normalized: r for r in records}
    ordered = rattler.PackageRecord.sort_topologically(list[rattler.PackageRecord](records))
    return [by_name[r.name.normalized] for r in ordered]


def write_pixi_lock(
    path: Path,
    records: dict[str, list[rattler.RepoDataRecord]] | None = None,
    *,
    environment: str = "default",
    channel_url: str,
    environments: dict[str, dict[str, list[rattler.RepoDataRecord]]] | None = None,
) -> Path:
    """Write a pixi.lock with ``records`` (platform -> records) for ``environment``.

    ``environments`` (env name -> platform -> records) adds more environments; every
    environment gets ``channel_url`` as its only channel. Returns ``path``.
    """
    envs: dict[str, dict[str, list[rattler.RepoDataRecord]]] = {}
    if records is not None:
        envs[environment] = records
    for env_name, per_platform in (environments or {}).items():
        envs.setdefault(env_name, {}).update(per_platform)
    if not envs:
        raise ValueError("no records given")
    platforms = sorted({p for per_platform in envs.values() for p in per_platform})
    lock = rattler.LockFile([rattler.LockPlatform(p) for p in platforms])
    channel = channel_url if channel_url.endswith("/") else channel_url + "/"
    for env_name, per_platform in envs.items():
        lock.set_channels(env_name, [rattler.LockChannel(channel)])
        for platform, recs in per_platform.items():
            for rec in recs:
                lock.add_conda_package(env_name, rattler.LockPlatform(platform), rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock.to_path(path)
    return path
