"""Test-fixture factories: real conda packages, channels, lock files and an HTTP channel server.

Everything here works offline (only 127.0.0.1 is contacted). ``scripts/demo.py`` imports this
module too (with the repository root on ``sys.path``), so keep it free of pytest imports.

Findings (py-rattler 0.28.0, py-rattler-build 0.73.0, measured on a 2-core box):

* ``Stage0Recipe.from_file(p).run_build(VariantConfig(), ToolConfiguration(), output_dir=...,
  channels=[...], no_build_id=True)`` builds a tiny recipe in 0.05-0.3 s. ``channels`` defaults to
  ``["conda-forge"]`` when ``None``: always pass a list. ``output_dir`` receives ``bld/``,
  ``src_cache/``, ``build_cache/``, a log file and its own ``repodata.json``, so we build into a
  scratch folder and move only the archives out. Archives come out with mode 0600 (chmod 0644).
* ``${{ compiler('c') }}`` cannot resolve offline: the recipes call the system ``gcc``. The
  build script inherits the caller's PATH (``env_isolation`` STRICT still keeps PATH).
* ``noarch: python`` builds offline once a ``python`` package is in a local channel passed via
  ``channels=[file://...]``; the build script copies the module into ``$SP_DIR`` (no pip).
  rattler-build stores it under ``site-packages/`` and writes ``info/link.json`` entry points.
* rattler lays noarch python packages out from the *version of the record named python* in the
  transaction (3.11.0 -> ``lib/python3.11/site-packages``, entry-point shebang
  ``#!<prefix>/bin/python3.11``). Our stand-in ``bin/python3.11`` is a ``#!/bin/sh`` wrapper;
  Linux happily runs a script whose interpreter is itself a script.
* ``rattler.index.index_fs`` is a coroutine (``asyncio.run`` it). It also writes
  ``repodata.json.zst``, sharded repodata and leaves an empty ``<channel>/.tmp`` (removed here).
* ``rattler-build`` records softlinks in paths.json with the *target's* sha256 and
  ``size_in_bytes`` = length of the link text; hand-written archives do the same.
* ``rattler.solve`` against ``Channel("http://127.0.0.1:<port>")`` fetches repodata over HTTP and
  returns records whose ``url`` is already the HTTP one (sha256 set): no URL rewriting needed.
  A fresh ``Gateway(cache_dir=<tmp>)`` per solve avoids stale repodata when ports get reused.
* ``rattler.Platform`` is a deprecated alias of ``rattler.Subdir`` (DeprecationWarning, and
  pytest here turns warnings into errors).
* ``RepoDataRecord.sort_topologically`` returns plain ``PackageRecord``s (no url/sha256):
  map the order back onto the RepoDataRecords.
* ``LockFile([LockPlatform(p)])`` + ``add_conda_package(env, LockPlatform(p), record)`` +
  ``set_channels`` + ``to_path`` writes a pixi.lock (version 6+) that ``LockFile.from_path``
  reads back with the same records. Reading back: pass a platform from ``lock.platforms()`` to
  ``env.conda_repodata_records_for_platform``; a fresh ``LockPlatform("linux-64")`` raises
  ``pyo3_runtime.PanicException`` (a BaseException, not an Exception!).
* The rattler gateway fetches *sharded* repodata (``repodata_shards.msgpack.zst`` + shards)
  from any HTTP channel that has it, so ``ChannelServer.requests`` shows shard paths, not
  ``repodata.json``. Pass ``index_channel(..., write_shards=False)`` to test the classic path
  (the gateway then tries shards, ``.json.zst``, ``.json.bz2``, ``.json``; 404s are fine).
* rattler (0.28) vs malicious tar members while filling its cache: ``../x`` members are skipped
  silently, ``/abs`` members land *inside* the cache folder (leading ``/`` stripped), a file
  written through a symlink that points outside fails the install ("trying to unpack outside
  of destination path"); a ``../`` path listed in paths.json fails at link time.
* Timings: ``build_demo_channel`` ~0.8 s (4 builds + 5 index runs); solving over HTTP ~35 ms;
  installing the 4 demo packages over HTTP ~0.1 s; tests/test_factories.py ~3 s in total.
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import contextlib
import hashlib
import io
import json
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import rattler
import zstandard
from lockship.builder.testing.channels import (
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from lockship.stub.shared.manifest import InstallerOptions, Manifest, PackageInfo
from lockship.stub.shared.payload import Entry, EntryChecksumMismatch
from lockship.stub.source import MissingEntry

__all__ = [
    "DEMO_RECIPES",
    "REPO_ROOT",
    "ChannelServer",
    "MemorySource",
    "RecordingReporter",
    "RequestRecord",
    "archive_members",
    "build_demo_channel",
    "build_recipe",
    "channel_records",
    "core_manifest",
    "demo_recipe_order",
    "index_channel",
    "locked_package",
    "package_info",
    "write_conda_package",
    "write_pixi_lock",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPES = REPO_ROOT / "scripts" / "demo" / "recipes"

_V = TypeVar("_V")


# --------------------------------------------------------------------------------------------
# Building real packages with py-rattler-build
# --------------------------------------------------------------------------------------------


def build_recipe(
    recipe_dir: Path, output_dir: Path, channels: list[str] | None = None
) -> list[Path]:
    """Build ``recipe_dir/recipe.yaml`` with py-rattler-build; return the archives produced.

    The archives land in ``output_dir/<subdir>/`` with mode 0644 (the build's scratch files go
    to a temporary folder). ``channels`` are channel URLs (e.g. ``file:///...``) used to
    resolve build/host requirements; ``None`` means no channel at all (never conda-forge).
    """
    from rattler_build import Stage0Recipe, ToolConfiguration, VariantConfig

    recipe_file = recipe_dir / "recipe.yaml" if recipe_dir.is_dir() else recipe_dir
    recipe = Stage0Recipe.from_file(str(recipe_file))
    produced: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="lsbuild-") as scratch:
        results = recipe.run_build(
            VariantConfig(),
            ToolConfiguration(test_strategy="skip"),
            output_dir=scratch,
            channels=list(channels or []),
            no_build_id=True,
        )
        for result in results:
            for archive in result.packages:
                archive = Path(archive)
                dest_dir = output_dir / archive.parent.name  # the archive's subdir
                dest_dir.mkdir(parents=True, exist_ok=True)
                dest = dest_dir / archive.name
                shutil.move(str(archive), dest)
                dest.chmod(0o644)
                produced.append(dest)
    return produced


def _recipe_requirement_names(recipe_dir: Path) -> tuple[str, set[str]]:
    from rattler_build import Stage0Recipe

    data = Stage0Recipe.from_file(str(recipe_dir / "recipe.yaml")).to_dict()
    name = str(data["package"]["name"])
    deps: set[str] = set()
    for section in ("build", "host", "run"):
        for req in (data.get("requirements") or {}).get(section) or []:
            if isinstance(req, str) and req.strip():
                deps.add(req.split()[0])
    return name, deps


def demo_recipe_order(recipes_root: Path = DEMO_RECIPES) -> list[Path]:
    """Recipe folders under ``recipes_root`` sorted so that dependencies are built first."""
    info = {
        d: _recipe_requirement_names(d)
        for d in sorted(recipes_root.iterdir())
        if (d / "recipe.yaml").is_file()
    }
    by_name = {name: d for d, (name, _) in info.items()}
    ordered: list[Path] = []
    state: dict[Path, str] = {}

    def visit(d: Path) -> None:
        if state.get(d) == "done":
            return
        if state.get(d) == "visiting":
            raise ValueError(f"dependency cycle through recipe {d.name}")
        state[d] = "visiting"
        for dep in sorted(info[d][1]):
            if dep in by_name and by_name[dep] != d:
                visit(by_name[dep])
        state[d] = "done"
        ordered.append(d)

    for d in info:
        visit(d)
    return ordered


def build_demo_channel(channel_dir: Path, recipes_root: Path = DEMO_RECIPES) -> Path:
    """Build every demo recipe (dependencies first) into an indexed local channel.

    Layout: ``channel_dir/<subdir>/*.conda`` plus repodata; ``noarch/`` always exists.
    Each build can resolve its requirements from the packages built before it.
    """
    channel_dir.mkdir(parents=True, exist_ok=True)
    (channel_dir / "noarch").mkdir(exist_ok=True)
    index_channel(channel_dir)
    channel_uri = channel_dir.resolve().as_uri()
    for recipe_dir in demo_recipe_order(recipes_root):
        build_recipe(recipe_dir, channel_dir, channels=[channel_uri])
        index_channel(channel_dir)
    return channel_dir


# --------------------------------------------------------------------------------------------
# Hand-written archives (written by lockship.builder.testing.channels, which the benchmark
# shares; read back here)
# --------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_members(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """All tar members of a ``.conda`` (info and pkg tars) or ``.tar.bz2`` archive.

    Maps the member name (verbatim) to its ``TarInfo`` and content (``b""`` for non-files).
    """
    blobs: list[bytes] = []
    if archive.name.endswith(".conda"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith(".tar.zst"):
                    reader = zstandard.ZstdDecompressor().stream_reader(zf.read(name))
                    blobs.append(reader.read())
    else:
        blobs.append(bz2.decompress(archive.read_bytes()))
    members: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    for blob in blobs:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for info in tar.getmembers():
                f = tar.extractfile(info) if info.isfile() else None
                members[info.name] = (info, f.read() if f is not None else b"")
    return members


def package_info(archive: Path) -> dict[str, Any]:
    """``index.json``, ``paths.json`` (as ``{path: entry}``) and ``link.json`` of an archive."""
    members = archive_members(archive)

    def load(name: str) -> Any:
        entry = members.get(f"info/{name}")
        return json.loads(entry[1]) if entry is not None else None

    paths = load("paths.json") or {"paths": []}
    return {
        "index": load("index.json"),
        "paths": {e["_path"]: e for e in paths["paths"]},
        "link": load("link.json"),
    }


# --------------------------------------------------------------------------------------------
# HTTP channel server with fault injection
# --------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request seen by :class:`ChannelServer` (``path`` without query, leading ``/``).

    Logged on arrival; ``status`` stays 0 until the answer is sent (e.g. while hanging).
    """

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


def _norm(path: str) -> str:
    return "/" + unquote(urlsplit(path).path).lstrip("/")


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        owner = self.server.owner
        path = _norm(self.path)
        self._status = 0
        record = owner._record(self.command, path, dict(self.headers.items()))
        try:
            self._serve_inner(owner, path, head=head)
        finally:
            record.status = self._status

    def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve_inner(self, owner: ChannelServer, path: str, *, head: bool) -> None:
        delay = owner.hang.get(path, owner.delay)
        if delay:
            owner._stopping.wait(delay)
        if owner.auth is not None:
            user, password = owner.auth
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send_empty(401, {"WWW-Authenticate": 'Basic realm="lockship-test"'})
                return
        if path in owner.status_overrides:
            self._send_empty(owner.status_overrides[path])
            return
        if owner._take_failure(path):
            self._send_empty(owner.fail_status)
            return
        body: bytes | None = owner.content_overrides.get(path)
        cut = owner.truncate.get(path)
        if body is None and cut is None:
            if head:
                super().do_HEAD()
            else:
                super().do_GET()
            return
        if body is None:
            file = Path(self.translate_path(path))
            if not file.is_file():
                self._send_empty(404)
                return
            body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])  # announce the full length, send less, hang up
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ChannelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, truncation tests) are expected: stay quiet.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class ChannelServer:
    """Serve ``directory`` over HTTP on 127.0.0.1 (free port) in a background thread.

    Use as a context manager (or ``start()``/``stop()``); ``url`` has no trailing slash.
    Fault-injection hooks, all keyed by URL path relative to the root (``"linux-64/x.conda"``
    or ``"/linux-64/x.conda"``), can be changed while the server runs:

    * ``status_overrides[path] = 404``: answer with that status and an empty body.
    * ``fail_first_n[path] = n``: the first ``n`` requests for ``path`` get ``fail_status``
      (default 503); key ``"*"`` counts requests to any path.
    * ``truncate[path] = n``: announce the full Content-Length, send ``n`` bytes, hang up.
    * ``hang[path] = seconds``: sleep before answering (``delay`` does it for every path);
      the sleep ends early when the server stops.
    * ``content_overrides[path] = b"..."``: serve these bytes instead of the file.
    * ``auth = ("user", "pass")``: require HTTP basic auth (401 otherwise).

    ``requests`` records every request (method, path, headers, status) in arrival order.
    """

    def __init__(
        self,
        directory: Path,
        *,
        auth: tuple[str, str] | None = None,
        delay: float = 0.0,
        fail_status: int = 503,
    ) -> None:
        self.directory = Path(directory)
        self.auth = auth
        self.delay = delay
        self.fail_status = fail_status
        self.status_overrides: _PathDict[int] = _PathDict()
        self.fail_first_n: _PathDict[int] = _PathDict()
        self.truncate: _PathDict[int] = _PathDict()
        self.hang: _PathDict[float] = _PathDict()
        self.content_overrides: _PathDict[bytes] = _PathDict()
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> ChannelServer:
        directory = str(self.directory)

        class Handler(_Handler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=directory, **kwargs)

        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.owner = self
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ChannelServer:{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ChannelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------
    def reset_faults(self) -> None:
        """Clear every fault hook and the request log (``auth``/``delay`` included)."""
        with self._lock:
            for hook in (
                self.status_overrides,
                self.fail_first_n,
                self.truncate,
                self.hang,
                self.content_overrides,
            ):
                hook.clear()
            self.auth = None
            self.delay = 0.0
            self.requests.clear()

    def request_count(self, path: str | None = None) -> int:
        """Number of requests seen (for ``path`` only, if given)."""
        with self._lock:
            if path is None:
                return len(self.requests)
            p = _norm(path)
            return sum(1 for r in self.requests if r.path == p)

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def _take_failure(self, path: str) -> bool:
        with self._lock:
            for key in (path, "/*"):
                left = self.fail_first_n.get(key, 0)
                if left > 0:
                    self.fail_first_n[key] = left - 1
                    return True
        return False

    def _record(self, method: str, path: str, headers: dict[str, str]) -> RequestRecord:
        record = RequestRecord(method, path, headers)
        with self._lock:
            self.requests.append(record)
        return record


class _PathDict(dict[str, _V], Generic[_V]):
    """A dict whose keys are URL paths normalised to start with a single ``/``."""

    def __setitem__(self, key: str, value: _V) -> None:
        super().__setitem__(_norm(key), value)

    def __getitem__(self, key: str) -> _V:
        return super().__getitem__(_norm(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(_norm(key))

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(_norm(key), default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


# --------------------------------------------------------------------------------------------
# PyPI wheels and pixi.lock PyPI entries
# --------------------------------------------------------------------------------------------


def write_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    modules: dict[str, str],
    console_scripts: dict[str, str] | None = None,
) -> Path:
    """Hand-write a pure-python wheel (``py3-none-any``) with its dist-info and RECORD."""
    import csv
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    normalized = name.replace("-", "_")
    dist_info = f"{normalized}-{version}.dist-info"
    files: dict[str, bytes] = {path: text.encode() for path, text in modules.items()}
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: lockship-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if console_scripts:
        lines = ["[console_scripts]"] + [f"{k} = {v}" for k, v in console_scripts.items()]
        files[f"{dist_info}/entry_points.txt"] = ("\n".join(lines) + "\n").encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files[f"{dist_info}/RECORD"] = record.getvalue().encode()
    wheel = folder / f"{normalized}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def add_pypi_packages(
    lock_path: Path, platform: str, packages: list[tuple[str, str, str, str | None]]
) -> Path:
    """Add PyPI packages ``(name, version, location, sha256)`` to every environment of a
    pixi.lock for ``platform``, as pixi writes them (rattler cannot add hashes)."""
    text = lock_path.read_text()
    marker = f"      {platform}:\n"
    if marker not in text:
        raise ValueError(f"{lock_path} has no {platform} section")
    listing = "".join(f"      - pypi: {location}\n" for _, _, location, _ in packages)
    text = text.replace(marker, marker + listing)
    for name, version, location, sha256 in packages:
        text += f"- pypi: {location}\n  name: {name}\n  version: '{version}'\n"
        if sha256:
            text += f"  sha256: {sha256}\n"
    lock_path.write_text(text)
    return lock_path


# --------------------------------------------------------------------------------------------
# The install core's inputs, in process: locked package entries and an in-memory source
# --------------------------------------------------------------------------------------------


def package_entry(name: str, version: str, sha256: str, **record: object) -> PackageInfo:
    """A noarch manifest entry with no archive behind it: the facts that deciding what an
    update keeps reads (``record`` overrides the repodata fields, e.g. ``md5``)."""
    file_name = f"{name}-{version}-0.conda"
    return PackageInfo(
        entry=f"noarch/{file_name}",
        file_name=file_name,
        name=name,
        version=version,
        build="0",
        subdir="noarch",
        url=f"https://example.invalid/noarch/{file_name}",
        channel="https://example.invalid",
        sha256=sha256,
        size=1,
        record={"md5": "m1", **record},
    )


def locked_package(
    archive: Path, *, channel: str = "https://conda.example.invalid/demo"
) -> tuple[PackageInfo, bytes]:
    """A manifest entry for ``archive`` as the builder makes one (locked at ``channel``),
    and the archive's bytes."""
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(archive))
    data = json.loads(record.to_json())
    for key in ("fn", "url", "channel"):
        data.pop(key, None)
    blob = archive.read_bytes()
    subdir = str(record.subdir)
    info = PackageInfo(
        entry=f"{subdir}/{archive.name}",
        file_name=archive.name,
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        subdir=subdir,
        url=f"{channel}/{subdir}/{archive.name}",
        channel=channel,
        sha256=_sha256(blob),
        size=len(blob),
        record=data,
    )
    return info, blob


def core_manifest(
    packages: Sequence[PackageInfo],
    *,
    platform: str | None = None,
    options: InstallerOptions | None = None,
    name: str = "coredemo",
) -> Manifest:
    return Manifest(
        name=name,
        version="1.0",
        platform=platform or str(rattler.Subdir.current()),
        environment="default",
        lockship_version="0.1.0",
        packages=tuple(packages),
        installed_size=sum(p.size for p in packages) * 4,
        options=options or InstallerOptions(),
    )


@dataclass(frozen=True)
class MemorySource:
    """A package source held in memory (the install core's in-process tests).

    ``entries`` maps entry names to bytes; ``sha256`` overrides what an entry must hash to
    (the manifest's sha256 for packages, the bytes' own for the rest).
    """

    manifest: Manifest
    entries: dict[str, bytes]
    sha256: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 64 * 1024

    def read(self, name: str) -> Iterator[bytes]:
        return self._stream(name, self._data(name), self.digest(name))

    def digest(self, name: str) -> str:
        """What entry ``name`` must hash to."""
        data = self._data(name)
        return self.sha256.get(name) or next(
            (p.sha256 for p in self.manifest.packages if p.entry == name), _sha256(data)
        )

    def locate(self, name: str) -> None:
        """Held in memory, in no file: the installer copies the entries out."""
        self._data(name)

    def _data(self, name: str) -> bytes:
        if name not in self.entries:
            raise MissingEntry(name)
        return self.entries[name]

    def _stream(self, name: str, data: bytes, expected: str) -> Iterator[bytes]:
        chunks = [data[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)]
        yield from chunks[:-1]
        actual = _sha256(data)
        if actual != expected:
            raise EntryChecksumMismatch(name, expected, actual)
        yield from chunks[-1:]


class RecordingReporter:
    """A reporter that remembers its stages and messages, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.totals: dict[str, int] = {}

    def start(self, description: str, total: int, unit: str = "it") -> None:
        self.events.append(("start", description))
        self.totals[description] = total

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        self.events.append(("finish", ""))

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    @property
    def stages(self) -> list[str]:
        return [text for kind, text in self.events if kind == "start"]

    @property
    def messages(self) -> list[str]:
        return [text for kind, text in self.events if kind == "message"]


def write_payload(
    out: BinaryIO, files: Iterable[tuple[str, Path]], metadata: dict[str, Any]
) -> list[Entry]:
    """Append a payload of ``files`` (``(entry name, path)``) to ``out``, laid out by the
    product's own :func:`lockship.stub.shared.payload.plan_payload`; return its entries."""
    from lockship.stub.shared.payload import plan_payload

    pairs = list(files)
    blobs = [path.read_bytes() for _, path in pairs]
    listed = [
        (name, len(b), hashlib.sha256(b).hexdigest())
        for (name, _), b in zip(pairs, blobs, strict=True)
    ]
    entries, tail = plan_payload(out.tell(), listed, metadata)
    for blob in blobs:
        out.write(blob)
    out.write(tail)
    return entries


# --- stand-in stubs ----------------------------------------------------------------------------

STAND_IN = b"\x7fELF stand-in stub " + b"\x00" * 100


def write_stand_in_stub(path: Path, content: bytes = STAND_IN) -> Path:
    """A stub for builds whose installers are not run: a stub pack whose unpacker is
    ``content`` (for an ``.exe``, made to begin as a PE file does) and whose frames hold an
    empty folder."""
    from lockship.builder.stubs.pack import compress_frames, trailer

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".exe") and not content.startswith(b"MZ"):
        content = b"MZ" + content
    frames = compress_frames(b"\0" * 1024, frames=1, level=1)
    path.write_bytes(content + frames + trailer(len(content), len(frames)))
    return path


def write_marking_program(folder: Path, name: str) -> Path:
    """A program ``name`` in the new ``folder`` that, when run, writes its arguments to a mark
    file; returns the mark's path (it exists only once the program ran)."""
    folder.mkdir()
    mark = folder / f"{name}-ran"
    program = folder / name
    program.write_text(f'#!/bin/sh\necho "$@" > "{mark}"\n')
    program.chmod(0o755)
    return mark
