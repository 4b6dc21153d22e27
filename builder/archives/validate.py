"""Every conda archive checked in full before it goes into an installer.

What would fail on the target machine fails the build instead, in one line naming the archive:
every zip entry and tar member read to its end (checksums, decompression), every member safe
(no absolute or ``..`` name, nothing written through a symlink, no device files), every link
resolvable (a hard link names a file before it; a link has a target), and every ``paths.json``
entry present with the size and sha256 it lists. Archives are read with Python's ``zipfile``
(which accepts zip64 extra fields that rattler's streaming reader refuses), ``tarfile`` and
``zstandard``. Names from an archive are shown escaped and shortened: never raw bytes.

An archive that passes gets a marker beside it in the cache (cached archives never change).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import json
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import zstandard
from lockship.builder.errors import BuildError

#: bump when the checks change, so archives checked by an older builder are checked again
CHECK_VERSION = 1
_READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zstandard.ZstdError,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    UnicodeDecodeError,
)


class UnsafeArchive(BuildError):
    def __init__(self, archive: str, reason: str) -> None:
        self.archive, self.reason = archive, reason
        super().__init__(
            f"{archive} is unsafe to install: {reason}; the package is damaged or malicious, "
            "do not ship it"
        )


class DamagedArchive(BuildError):
    def __init__(self, archive: str, reason: str) -> None:
        self.archive, self.reason = archive, reason
        super().__init__(
            f"{archive} is damaged: {reason}; it would fail to install on the target machine: "
            "rebuild or re-pack the package, or leave it out of the environment"
        )


@dataclass(frozen=True)
class Member:
    kind: str  # "file", "dir", "symlink" or "hardlink"
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    #: the content of the metadata files read afterwards (``info/paths.json``)
    data: bytes = b""


#: members whose content is kept while reading
_KEEP = frozenset({"info/paths.json", "info/files"})


def shown(text: str, limit: int = 100) -> str:
    """``text`` fit for a one-line message: unprintable characters escaped, long text cut."""
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])
    joined = "".join(out)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _problem(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {shown(first)}" if first else type(e).__name__


def validate_archive(path: Path) -> None:
    """Raise :class:`UnsafeArchive` or :class:`DamagedArchive` unless ``path`` installs
    cleanly; remembered for the cache's file once it passed."""
    marker = path.with_name(f".{path.name}.checked-{CHECK_VERSION}")
    if marker.exists():
        return
    info, pkg = read_members(path)
    check_listing(path.name, info, pkg)
    with contextlib.suppress(OSError):  # a read-only cache still builds, checking again
        marker.touch()


def read_members(path: Path) -> tuple[dict[str, Member], dict[str, Member]]:
    """The members of the info and pkg parts (one tar for both in a ``.tar.bz2``)."""
    name = path.name
    if name.endswith(".tar.bz2"):
        try:
            with open(path, "rb") as raw, bz2.open(raw) as tar_stream:
                members = _tar_members(name, "the archive", tar_stream)
        except _READ_ERRORS as e:
            raise DamagedArchive(name, f"the archive is unreadable ({_problem(e)})") from e
        return members, members
    if not name.endswith(".conda"):
        raise DamagedArchive(name, "not a .conda or .tar.bz2 file")
    parts: dict[str, dict[str, Member]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for entry in zf.infolist():
                entry_name = shown(entry.filename)
                section = entry.filename.split("-", 1)[0]
                if entry.filename.endswith(".tar.zst") and section in ("info", "pkg"):
                    with zf.open(entry) as compressed, _zstd_reader(compressed) as stream:
                        parts[section] = _tar_members(name, entry_name, stream)
                elif entry.filename == "metadata.json":
                    json.loads(zf.read(entry))
                else:
                    zf.read(entry)  # read to its end: its CRC is checked
    except (UnsafeArchive, DamagedArchive):
        raise
    except _READ_ERRORS as e:
        raise DamagedArchive(name, f"the archive is unreadable ({_problem(e)})") from e
    if "info" not in parts:
        raise DamagedArchive(name, "it holds no info-*.tar.zst")
    return parts["info"], parts.get("pkg", {})


@contextlib.contextmanager
def _zstd_reader(compressed: IO[bytes]) -> Iterator[IO[bytes]]:
    reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
        compressed, read_across_frames=True
    )
    with reader:
        yield reader


def _safe_name(archive: str, name: str, what: str = "") -> str:
    """The member name, relative and normalised; raise for one that leaves the prefix."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    pure = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in pure.parts:
        raise UnsafeArchive(archive, f"{what}{shown(name)} lands outside the prefix")
    return name


def _tar_members(archive: str, part: str, stream: IO[bytes]) -> dict[str, Member]:
    members: dict[str, Member] = {}
    symlinks: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for item in tar:
                name = _safe_name(archive, item.name)
                if not name:
                    continue
                through = next(
                    (str(p) for p in PurePosixPath(name).parents if str(p) in symlinks), None
                )
                if through is not None:
                    raise UnsafeArchive(
                        archive, f"{shown(name)} is written through the symlink {shown(through)}"
                    )
                members[name] = _member(archive, name, item, tar, members)
                if item.issym():
                    symlinks.add(name)
    except (UnsafeArchive, DamagedArchive):
        raise
    except _READ_ERRORS as e:
        raise DamagedArchive(archive, f"{part} is unreadable ({_problem(e)})") from e
    return members


def _member(
    archive: str, name: str, item: tarfile.TarInfo, tar: tarfile.TarFile, seen: dict[str, Member]
) -> Member:
    if item.isfile():
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        source = tar.extractfile(item)
        if source is not None:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                if name in _KEEP:
                    kept += chunk
        if size != item.size:
            raise DamagedArchive(archive, f"{shown(name)} is cut short")
        return Member("file", size, digest.hexdigest(), data=bytes(kept))
    if item.isdir():
        return Member("dir")
    if item.issym():
        if not item.linkname:
            raise DamagedArchive(archive, f"the symlink {shown(name)} has no target")
        return Member("symlink", target=item.linkname)
    if item.islnk():
        if not item.linkname:
            raise DamagedArchive(archive, f"the hard link {shown(name)} has no target")
        target = _safe_name(archive, item.linkname, f"the hard link {shown(name)} -> ")
        linked = seen.get(target)
        if linked is None or linked.kind != "file":
            raise DamagedArchive(
                archive,
                f"the hard link {shown(name)} points at {shown(target)}, "
                "which is not a file before it in the archive",
            )
        return Member("hardlink", linked.size, linked.sha256, target)
    kind = "device file" if item.ischr() or item.isblk() else "fifo" if item.isfifo() else "member"
    raise UnsafeArchive(archive, f"{shown(name)} is a {kind}, which packages never hold")


def check_listing(archive: str, info: dict[str, Member], pkg: dict[str, Member]) -> None:
    """Every file ``paths.json`` (or, in old packages, ``info/files``) lists is in the
    archive, with the size and sha256 it lists."""
    if "info/index.json" not in info:
        raise DamagedArchive(archive, "it holds no info/index.json")
    paths = info.get("info/paths.json")
    if paths is None:
        files = info.get("info/files")
        if files is None:
            raise DamagedArchive(archive, "it holds neither info/paths.json nor info/files")
        listed = files.data.decode("utf-8", "surrogateescape").splitlines()
        missing = next((n for n in listed if n.strip() and n.rstrip("/") not in pkg), None)
        if missing is not None:
            raise DamagedArchive(
                archive, f"info/files lists {shown(missing)}, which the archive does not hold"
            )
        return
    try:
        entries = json.loads(paths.data)["paths"]
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedArchive(archive, f"its info/paths.json is malformed ({_problem(e)})") from e
    _check_entries(archive, entries, pkg)


def _check_entries(archive: str, entries: object, pkg: dict[str, Member]) -> None:
    if not isinstance(entries, list):
        raise DamagedArchive(archive, "its info/paths.json lists no paths")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("_path"), str):
            raise DamagedArchive(archive, "its info/paths.json holds an entry without _path")
        path = entry["_path"]
        member = pkg.get(path.rstrip("/"))
        if entry.get("path_type") == "directory":
            continue  # an empty folder: the installer makes it from the listing alone
        if member is None:
            raise DamagedArchive(
                archive, f"info/paths.json lists {shown(path)}, which the archive does not hold"
            )
        if entry.get("path_type", "hardlink") != "hardlink":
            continue
        if member.kind not in ("file", "hardlink"):
            raise DamagedArchive(
                archive, f"{shown(path)} is listed as a file but is a {member.kind}"
            )
        size = entry.get("size_in_bytes")
        if isinstance(size, int) and size != member.size:
            raise DamagedArchive(
                archive, f"{shown(path)} holds {member.size} bytes, paths.json lists {size}"
            )
        sha = entry.get("sha256")
        if isinstance(sha, str) and sha.lower() != member.sha256:
            raise DamagedArchive(archive, f"{shown(path)} does not match its sha256 in paths.json")
