"""Benchmark lockship against the honest references: plain copies and rattler itself.

One run (a few minutes on a 2-core machine) generates synthetic but realistic conda channels with
the test factories (cached in ``--work``), builds installers from their pixi.lock and measures,
``--repeat`` times each, reporting medians:

1. build time with a warm package cache vs. ``cat``-ing the same archives into one file;
2. installer size vs. the sum of the archive sizes plus the stub;
3. end-to-end install time (``bash installer.sh -b -p PREFIX``) vs. a bare ``rattler.install``
   of the same archives from a local folder (``file://`` URLs, fresh prefix and fresh cache on
   the same filesystem, in a subprocess: interpreter start and ``import rattler`` included);
4. time from start to the installer's first progress line (stderr), 1 MB vs. 1 GB payload;
5. peak resident memory of the installer's whole process tree (1 GB payload), by sampling
   ``/proc`` every ``--sample-interval`` seconds and summing the RSS of every descendant.
   The bare rattler runs are sampled the same way, as a reference.

It prints a table of absolute figures, ratios and targets, and writes everything (every sample,
every progress line with its timestamp, the phase breakdown of each install) as JSON.

Environments (scaled by ``--scale``, except the 1 MB and 1 GB ones):

* ``main``: 40 packages, ~300 MB of archives, ~10,000 files: many small compressible text files
  (Zipf-distributed identifiers, ~3-4x with zstd), fewer large random (incompressible) binaries,
  ~3 % of text files with a text prefix placeholder, ~20 % of binaries with a NUL-terminated
  255-character binary placeholder, a few symlinks and dependencies between packages;
* ``1mb``: 4 small packages (startup reference);
* ``22mb``: 8 packages, 22 MB of archives (with ``--peer``: the file size against conda-ship's);
* ``1gb``: 4 big packages of mostly random data (startup, memory); ``--skip-1gb`` skips it.

Usage: python scripts/bench.py [--scale 0.1] [--repeat 3] [--skip-1gb] [--stub PATH]
                               [--work DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lockship.builder.paths import host_platform  # noqa: E402

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer as peers  # noqa: E402  (scripts/peer.py: conda-ship's binaries)

from tests.factories import (  # noqa: E402
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)

PLATFORM = host_platform()  # packages are built for, and installed on, this machine
MB = 1_000_000  # every "MB" printed by this script is 10^6 bytes, like the installer's own

#: Bump when the generator changes, so cached channels are regenerated.
GENERATOR_VERSION = 1

#: conda-build style long prefix placeholder (255 characters), used for text and binary files.
PLACEHOLDER = (
    "/home/conda/feedstock_root/build_artifacts/bench_1704067200/_h_env_" + "placehold_" * 30
)[:255]

TARGETS = {
    "install_ratio": 1.0,  # installer install time / bare rattler (subprocess) time
    "startup_s": 0.4,  # seconds to the first progress line
    "startup_spread": 0.10,  # |startup(1 GB) / startup(1 MB) - 1|
    "stub_mb": 25.0,  # the installer program inside a .sh installer
    "peak_rss_mb": 100.0,  # process tree, 1 GB payload
    "size_ratio": 1.01,  # installer / (archives + stub)
    "build_ratio": 2.0,  # warm-cache build / plain copy
    "update_ratio": 0.5,  # update changing 1 package (-u) / fresh install of the same env
    "peer_install_ratio": 0.7,  # installer install time / conda-ship's (cold cache)
    "peer_size_ratio": 1.5,  # installer file / conda-ship's file, 22 MB environment
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# =============================================================================================
# Synthetic environments
# =============================================================================================


@dataclass(frozen=True)
class EnvSpec:
    """What to generate; every field goes into the cache key."""

    name: str
    packages: int
    archive_bytes: int  # target total size of the archives
    files: int  # target number of files (symlinks not counted)
    binary_share: float  # share of archive bytes that is random binary data
    binary_file_share: float  # share of files that are binaries
    text_placeholder_share: float  # share of text files with a text placeholder
    binary_placeholder_share: float  # share of binary files with a binary placeholder
    seed: int
    generator: int = GENERATOR_VERSION

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def env_specs(scale: float) -> dict[str, EnvSpec]:
    return {
        "main": EnvSpec(
            name="main",
            packages=40,
            archive_bytes=max(int(300 * MB * scale), 2 * MB),
            files=max(int(10_000 * scale), 200),
            binary_share=0.8,
            binary_file_share=0.1,
            text_placeholder_share=0.03,
            binary_placeholder_share=0.2,
            seed=1,
        ),
        "1mb": EnvSpec(
            name="1mb",
            packages=4,
            archive_bytes=1 * MB,
            files=60,
            binary_share=0.7,
            binary_file_share=0.15,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.3,
            seed=2,
        ),
        # the small environment issue 18 compares file sizes with conda-ship on (with --peer)
        "22mb": EnvSpec(
            name="22mb",
            packages=8,
            archive_bytes=22 * MB,
            files=600,
            binary_share=0.7,
            binary_file_share=0.15,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.3,
            seed=4,
        ),
        "1gb": EnvSpec(
            name="1gb",
            packages=4,
            archive_bytes=1000 * MB,
            files=200,
            binary_share=0.97,
            binary_file_share=0.4,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.1,
            seed=3,
        ),
    }


@dataclass
class PackagePlan:
    name: str
    version: str
    subdir: str
    kind: str
    depends: list[str]
    text_sizes: list[int]
    binary_sizes: list[int]
    text_placeholders: int  # how many of the text files get one
    binary_placeholders: int  # how many of the binary files get one
    seed: int


def _vocabulary() -> tuple[list[str], list[float]]:
    """Source-code-like tokens with Zipf weights (compresses about like real code)."""
    rng = random.Random(12345)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(rng.choices(letters, k=rng.randint(2, 12))) + rng.choice(["", "_", "s", "_id"])
        for _ in range(6000)
    ]
    common = [
        "\n",
        "\n    ",
        "\n        ",
        " = ",
        "(",
        ")",
        ", ",
        ".",
        ":",
        "self",
        "def ",
        "return ",
        "if ",
        "else:",
        "import ",
        "for ",
        " in ",
        "None",
        "#",
        '"',
        "0",
        "1",
    ]
    tokens = common + words
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(tokens))]
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    return tokens, cumulative


_TOKENS, _CUM_WEIGHTS = _vocabulary()


def gen_text(rng: random.Random, size: int) -> bytes:
    if size <= 0:
        return b""
    words = rng.choices(_TOKENS, cum_weights=_CUM_WEIGHTS, k=size // 4 + 16)
    data = " ".join(words).encode()
    while len(data) < size:  # rare: short tokens drawn
        data += b" ".join(w.encode() for w in rng.choices(_TOKENS, k=size // 4 + 16))
    return data[:size]


def text_compression_ratio() -> float:
    import zstandard

    sample = gen_text(random.Random(7), 4 * MB)
    return len(sample) / len(zstandard.ZstdCompressor(level=3).compress(sample))


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    if not weights:
        return []
    s = sum(weights) or 1.0
    exact = [total * w / s for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def plan_env(spec: EnvSpec, text_ratio: float) -> list[PackagePlan]:
    rng = random.Random(spec.seed)
    binary_bytes = int(spec.archive_bytes * spec.binary_share)
    text_bytes = int((spec.archive_bytes - binary_bytes) * text_ratio)
    n_binary = max(1, round(spec.files * spec.binary_file_share))
    n_text = max(1, spec.files - n_binary)
    kinds = ["pylib", "native", "mixed"]
    factors = {"pylib": (3.0, 0.2), "native": (0.3, 3.0), "mixed": (1.0, 1.0)}
    plan_kinds = [kinds[i % 3] for i in range(spec.packages)]
    text_w = [rng.lognormvariate(0, 1) * factors[k][0] for k in plan_kinds]
    bin_w = [rng.lognormvariate(0, 1) * factors[k][1] for k in plan_kinds]
    text_files = _split(n_text, text_w)
    bin_files = _split(n_binary, bin_w)
    for i in range(spec.packages):  # every package holds at least one file
        if text_files[i] + bin_files[i] == 0:
            text_files[i] = 1
    text_bytes_per = _split(text_bytes, [w * rng.lognormvariate(0, 0.3) for w in text_w])
    bin_bytes_per = _split(binary_bytes, [w * rng.lognormvariate(0, 0.3) for w in bin_w])
    plans: list[PackagePlan] = []
    names: list[str] = []
    for i, kind in enumerate(plan_kinds):
        name = f"bench-{spec.name}-{kind}-{i:02d}"

        def sizes(count: int, total: int) -> list[int]:
            if count == 0:
                return []
            return [
                max(1, s) for s in _split(total, [rng.lognormvariate(0, 1.2) for _ in range(count)])
            ]

        t_sizes = sizes(text_files[i], text_bytes_per[i])
        b_sizes = sizes(bin_files[i], bin_bytes_per[i])
        if bin_files[i] == 0 and bin_bytes_per[i] > 0 and t_sizes:
            t_sizes[0] += bin_bytes_per[i]  # nowhere to put the binary bytes: keep the total
        depends = sorted(set(rng.sample(names, k=min(len(names), rng.randint(0, 2)))))
        t_ph = min(len(t_sizes), round(len(t_sizes) * spec.text_placeholder_share + rng.random()))
        b_ph = min(len(b_sizes), round(len(b_sizes) * spec.binary_placeholder_share + rng.random()))
        plans.append(
            PackagePlan(
                name=name,
                version=f"1.{i}.0",
                subdir="noarch" if kind == "pylib" and i % 2 == 0 else PLATFORM,
                kind=kind,
                depends=depends,
                text_sizes=t_sizes,
                binary_sizes=b_sizes,
                text_placeholders=t_ph,
                binary_placeholders=b_ph,
                seed=spec.seed * 1000 + i,
            )
        )
        names.append(name)
    return plans


def _text_path(plan: PackagePlan, j: int, placeholder: bool) -> str:
    if placeholder:
        return f"bin/{plan.name}-tool{j}" if j % 2 == 0 else f"etc/{plan.name}/conf{j}.ini"
    folder = j // 40
    if plan.kind == "pylib":
        return f"lib/python3.11/site-packages/{plan.name.replace('-', '_')}/sub{folder}/m{j}.py"
    if plan.kind == "native":
        return f"include/{plan.name}/d{folder}/h{j}.h"
    return f"share/{plan.name}/doc{folder}/t{j}.txt"


def _binary_path(plan: PackagePlan, j: int) -> str:
    if plan.kind == "mixed":
        return f"share/{plan.name}/data/blob{j}.dat"
    return f"lib/lib{plan.name.replace('-', '_')}{j}.so.1.0"


def write_package(channel: Path, plan: PackagePlan) -> dict[str, Any]:
    """Generate one package (runs in a worker process); return what was written."""
    rng = random.Random(plan.seed)
    files: dict[str, bytes | str] = {}
    text_ph: dict[str, str] = {}
    bin_ph: dict[str, str] = {}
    symlinks: dict[str, str] = {}
    blob = gen_text(rng, sum(plan.text_sizes))
    offset = 0
    for j, size in enumerate(plan.text_sizes):
        chunk = blob[offset : offset + size]
        offset += size
        placeholder = j < plan.text_placeholders
        path = _text_path(plan, j, placeholder)
        if placeholder:
            header = (
                f"#!{PLACEHOLDER}/bin/python3.11\n# prefix={PLACEHOLDER}\n"
                if path.startswith("bin/")
                else f"[paths]\nprefix = {PLACEHOLDER}\nlibdir = {PLACEHOLDER}/lib\n"
            ).encode()
            chunk = header + chunk + f"\ndata = {PLACEHOLDER}/share\n".encode()
            text_ph[path] = PLACEHOLDER
        files[path] = chunk
    marker = PLACEHOLDER.encode() + b"\0"
    for j, size in enumerate(plan.binary_sizes):
        data = bytearray(rng.randbytes(size))
        path = _binary_path(plan, j)
        if j < plan.binary_placeholders:
            copies = 1 + j % 3
            for k in range(copies):
                at = max(0, min(len(data), (k + 1) * len(data) // (copies + 1)))
                data[at:at] = marker  # inserted: the size grows by 256 bytes per copy
            bin_ph[path] = PLACEHOLDER
        files[path] = bytes(data)
        if path.startswith("lib/") and j < 2:
            symlinks[path.removesuffix(".1.0")] = path.rsplit("/", 1)[1]
    archive = write_conda_package(
        channel,
        plan.name,
        plan.version,
        build="h0_0",
        subdir=plan.subdir,
        files=files,
        symlinks=symlinks,
        depends=plan.depends,
        text_placeholders=text_ph,
        binary_placeholders=bin_ph,
    )
    return {
        "archive": str(archive),
        "archive_size": archive.stat().st_size,
        "files": len(files),
        "symlinks": len(symlinks),
        "content_bytes": sum(len(v) for v in files.values()),
        "text_placeholder_files": sorted(text_ph),
        "binary_placeholder_files": sorted(bin_ph),
    }


@dataclass
class Env:
    spec: EnvSpec
    root: Path
    channel: Path
    workspace: Path
    archives: list[Path]
    stats: dict[str, Any]

    @property
    def archive_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.archives)


def ensure_env(work: Path, spec: EnvSpec, jobs: int) -> Env:
    """Generate (or reuse) the channel and pixi workspace for ``spec``."""
    root = work / "envs" / f"{spec.name}-{spec.key()}"
    marker = root / "env.json"
    if not marker.is_file():
        if root.exists():
            shutil.rmtree(root)
        t0 = time.perf_counter()
        log(f"generating the {spec.name!r} channel in {root} (cached for later runs)...")
        channel = root / "channel"
        channel.mkdir(parents=True)
        plans = plan_env(spec, text_compression_ratio())
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(write_package, [channel] * len(plans), plans))
        index_channel(channel)
        records = channel_records(channel, channel.as_uri(), PLATFORM)
        workspace = root / "workspace"
        write_pixi_lock(workspace / "pixi.lock", {PLATFORM: records}, channel_url=channel.as_uri())
        (workspace / "pixi.toml").write_text(
            f'[workspace]\nname = "bench-{spec.name}"\nversion = "1.0"\n'
            f'channels = ["{channel.as_uri()}/"]\nplatforms = ["{PLATFORM}"]\n'
        )
        stats = {
            "packages": len(results),
            "files": sum(r["files"] for r in results),
            "symlinks": sum(r["symlinks"] for r in results),
            "content_bytes": sum(r["content_bytes"] for r in results),
            "archive_bytes": sum(r["archive_size"] for r in results),
            "text_placeholder_files": sum(len(r["text_placeholder_files"]) for r in results),
            "binary_placeholder_files": sum(len(r["binary_placeholder_files"]) for r in results),
            "example_text_placeholder": next(
                (f for r in results for f in r["text_placeholder_files"]), None
            ),
            "example_binary_placeholder": next(
                (f for r in results for f in r["binary_placeholder_files"]), None
            ),
            "archives": [Path(r["archive"]).relative_to(channel).as_posix() for r in results],
            "generated_in_s": round(time.perf_counter() - t0, 1),
        }
        marker.write_text(json.dumps({"spec": asdict(spec), "stats": stats}, indent=2))
        log(
            f"  {stats['packages']} packages, {stats['files']} files, "
            f"{stats['archive_bytes'] / MB:.1f} MB of archives "
            f"({stats['content_bytes'] / MB:.1f} MB of content) in {stats['generated_in_s']} s"
        )
    stats = json.loads(marker.read_text())["stats"]
    channel = root / "channel"
    return Env(
        spec=spec,
        root=root,
        channel=channel,
        workspace=root / "workspace",
        archives=[channel / a for a in stats["archives"]],
        stats=stats,
    )


# =============================================================================================
# Running things: process-tree memory sampler, timed runs
# =============================================================================================


_HAS_CHILDREN_FILE = Path(f"/proc/self/task/{os.getpid()}/children").exists()


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (alive now)."""
    if _HAS_CHILDREN_FILE:
        pids = [root]
        i = 0
        while i < len(pids):
            pid = pids[i]
            i += 1
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        pids.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
        return pids
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _status_kb(pid: int) -> tuple[str, dict[str, int]] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    values: dict[str, int] = {}
    name = "?"
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Name":
            name = rest.strip()
        elif key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0])
    return (name, values) if "VmRSS" in values else None


def _pss_kb(pid: int) -> int | None:
    """The process's proportional set size: each page it shares counted by its share of it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class TreeSampler:
    """Samples the summed RSS of a process tree in a background thread, and the summed PSS:
    a sum of RSS counts a page that forked workers share with their parent once per process,
    a sum of PSS once in all."""

    def __init__(self, root: int, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.samples = 0
        self.peak_rss_kb = 0
        self.peak_anon_kb = 0
        self.peak_pss_kb = 0
        self.peak_processes: list[tuple[str, int]] = []
        self.max_processes = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break
        self.cpu_s = time.thread_time() - cpu0

    def sample(self) -> None:
        rss = anon = pss = 0
        procs: list[tuple[str, int]] = []
        for pid in _tree_pids(self.root):
            status = _status_kb(pid)
            if status is None:
                continue
            name, values = status
            rss += values["VmRSS"]
            anon += values.get("RssAnon", 0)
            pss += _pss_kb(pid) or 0
            procs.append((name, values["VmRSS"]))
        self.samples += 1
        self.max_processes = max(self.max_processes, len(procs))
        if rss > self.peak_rss_kb:
            self.peak_rss_kb = rss
            self.peak_processes = procs
        self.peak_anon_kb = max(self.peak_anon_kb, anon)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)


@dataclass
class Run:
    seconds: float
    returncode: int
    lines: list[tuple[float, str, str]]  # (seconds since start, "out"|"err", text)
    peak_rss_mb: float
    peak_anon_mb: float
    peak_pss_mb: float
    peak_processes: list[tuple[str, float]]
    sampler: dict[str, float] = field(default_factory=dict)

    def first_line(self, stream: str = "err") -> tuple[float, str] | None:
        return next(((t, text) for t, s, text in self.lines if s == stream and text), None)

    def tail(self, n: int = 15) -> str:
        return "\n".join(f"  {s}: {text}" for _, s, text in self.lines[-n:])


def timed_run(
    command: Sequence[str],
    *,
    sample_interval: float | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run ``command``, timestamp each output line, sample the tree's memory; never raises."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    lines: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def reader(stream: Any, name: str) -> None:
        for raw in iter(stream.readline, b""):
            stamp = time.perf_counter() - t0
            with lock:
                lines.append((stamp, name, raw.decode(errors="replace").rstrip("\r\n")))
        stream.close()

    readers = [
        threading.Thread(target=reader, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=reader, args=(proc.stderr, "err"), daemon=True),
    ]
    for thread in readers:
        thread.start()
    sampler = TreeSampler(proc.pid, sample_interval).start() if sample_interval else None
    # Not ru_maxrss (wait4/getrusage): it is the largest *single* process, and on Linux it
    # inherits this (parent) process's high-water mark through fork/vfork + exec.
    _, status = os.waitpid(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler is not None:
        sampler.stop()
    for thread in readers:
        thread.join()
    lines.sort(key=lambda item: item[0])
    return Run(
        seconds=seconds,
        returncode=proc.returncode,
        lines=lines,
        peak_rss_mb=(sampler.peak_rss_kb * 1024 / MB) if sampler else math.nan,
        peak_anon_mb=(sampler.peak_anon_kb * 1024 / MB) if sampler else math.nan,
        peak_pss_mb=(sampler.peak_pss_kb * 1024 / MB) if sampler else math.nan,
        peak_processes=[(n, kb * 1024 / MB) for n, kb in sampler.peak_processes] if sampler else [],
        sampler={
            "samples": sampler.samples,
            "cpu_s": round(sampler.cpu_s, 3),
            "max_processes": sampler.max_processes,
        }
        if sampler
        else {},
    )


_PHASE_START = re.compile(r"^(?P<phase>[A-Z][^():]*?) \([^()]*\)\.\.\.$")  # "Linking (40 pkg)..."
_PHASE_END = re.compile(r"^(?P<phase>[A-Z][^():]*?): done$")  # "Linking: done"


def phase_breakdown(run: Run) -> dict[str, float]:
    """Seconds per installer phase, from the timestamps of its progress lines.

    ``startup`` = start -> first stderr line; ``<Phase>`` = "<Phase> (...)..." -> "<Phase>: done";
    ``between`` = time not covered by any phase before the final stdout line;
    ``after_last_line`` = final stdout line -> process exit.
    """
    phases: dict[str, float] = {}
    first = run.first_line("err")
    if first is not None:
        phases["startup"] = first[0]
    starts: dict[str, float] = {}
    covered = 0.0
    for t, stream, text in run.lines:
        if stream != "err":
            continue
        if m := _PHASE_START.match(text):
            starts[m["phase"]] = t
        elif (m := _PHASE_END.match(text)) and m["phase"] in starts:
            span = t - starts.pop(m["phase"])
            phases[m["phase"]] = phases.get(m["phase"], 0.0) + span
            covered += span
    last_out = next((t for t, s, text in reversed(run.lines) if s == "out" and text), None)
    if last_out is not None and first is not None:
        phases["between"] = max(0.0, last_out - first[0] - covered)
        phases["after_last_line"] = run.seconds - last_out
    return {k: round(v, 3) for k, v in phases.items()}


BARE_INSTALL = r"""
import asyncio, json, os, sys, time
t0 = time.perf_counter()
from pathlib import Path
import rattler
from rattler import Channel, RepoData, Subdir
channel, prefix, cache = (Path(a) for a in sys.argv[1:4])
platform = sys.argv[4]
records = []
for subdir in (platform, "noarch"):
    repodata = channel / subdir / "repodata.json"
    if repodata.is_file():
        records.extend(RepoData.from_path(repodata).into_repo_data(Channel(channel.as_uri())))
t1 = time.perf_counter()
asyncio.run(rattler.install(records, prefix, cache_dir=cache, platform=Subdir(platform),
                            show_progress=False))
t2 = time.perf_counter()
print(json.dumps({"startup_s": t1 - t0, "install_s": t2 - t1, "records": len(records)}))
# what lockship's installer does too (stub/compat.py): rattler's runtime threads can crash the
# interpreter's teardown (a segfault after the work is done, seen here under load)
sys.stdout.flush()
os._exit(0)
"""


def drop_dirty_pages() -> None:
    """Write back dirty pages so one measurement's writes do not slow down the next."""
    os.sync()


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def tree_files(root: Path) -> set[str]:
    return {
        str(Path(d, f).relative_to(root))
        for d, dirs, files in os.walk(root)
        for f in files + [x for x in dirs if Path(d, x).is_symlink()]
    }


# =============================================================================================
# The measurements
# =============================================================================================


class Bench:
    def __init__(self, args: argparse.Namespace, stub: Path) -> None:
        self.args = args
        self.work: Path = args.work
        self.stub = stub
        self.repeat: int = args.repeat
        self.interval: float = args.sample_interval
        self.runs_dir = (args.runs or self.work) / "runs"
        self.results: dict[str, Any] = {}
        # Installers unpack their program (and write failure logs) into TMPDIR: keep that on
        # the same filesystem as the prefixes.
        self.tmp = fresh_dir((args.runs or self.work) / "tmp")
        self.installer_env = {**os.environ, "TMPDIR": str(self.tmp)}
        self.peer: peers.CondaShip | None = None
        if args.peer:
            found = peers.CondaShip(args.peer_home)
            if found.available():
                self.peer = found
            else:
                log(
                    f"no {peers.NAME} binaries in {args.peer_home} (scripts/dev-env.sh or "
                    "python scripts/peer.py fetches them): the peer column is skipped"
                )

    # -- the peer (conda-ship) -------------------------------------------------------------
    def peer_build(self, env: Env) -> Path | None:
        """Build ``env`` with conda-ship, cold then ``repeat`` times warm; its executable."""
        if self.peer is None:
            return None
        root = self.work / "peer" / env.spec.name
        workspace = self.peer.workspace(env.workspace, root / "workspace", f"bench-{env.spec.name}")
        times = []
        for i in range(self.repeat + 1):
            log(f"[{env.spec.name}] {peers.NAME} build {i + 1}/{self.repeat + 1}...")
            out = fresh_dir(root / "out")
            drop_dirty_pages()
            command = self.peer.build_command(workspace, out)
            run = timed_run(command, sample_interval=None, env=self._peer_env(root / "build"))
            if run.returncode != 0:
                raise SystemExit(f"{peers.NAME} build failed ({run.returncode}):\n{run.tail()}")
            times.append(run.seconds)
        executable = out / f"bench-{env.spec.name}"
        self.results.setdefault("peer", {})[env.spec.name] = {
            "cold_build_s": times[0],
            "warm_build_s": times[1:],
            "warm_build_median_s": median(times[1:]),
            "file_bytes": executable.stat().st_size,
        }
        return executable

    def run_peer(self, env: Env, executable: Path, tag: str) -> float:
        """Seconds for conda-ship's executable to install ``env`` (fresh prefix and cache)."""
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-peer-{tag}")
        prefix = base / "prefix"
        drop_dirty_pages()
        run = timed_run(
            [str(executable)], sample_interval=None, env=self._peer_env(base, prefix=prefix)
        )
        installed = len(list((prefix / "conda-meta").glob("*.json")))
        if installed != env.stats["packages"]:
            raise SystemExit(
                f"{peers.NAME} installed {installed} of {env.stats['packages']} packages "
                f"({run.returncode}):\n{run.tail()}"
            )
        shutil.rmtree(base)
        return run.seconds

    def _peer_env(self, base: Path, prefix: Path | None = None) -> dict[str, str]:
        env = {**self.installer_env, "RATTLER_CACHE_DIR": str(base / "rattler-cache")}
        if prefix is not None:
            env["CONDA_SHIP_PREFIX"] = str(prefix)
        return env

    # -- build ---------------------------------------------------------------------------
    def build(self, env: Env, out: Path) -> tuple[float, Path]:
        cache = self.work / "build-cache" / env.spec.name
        command = [sys.executable, "-m", "lockship.builder.cli", "build", str(env.workspace)]
        command += ["-o", str(out), "--cache-dir", str(cache), "--stub", str(self.stub)]
        drop_dirty_pages()
        run = timed_run(command, sample_interval=None, cwd=REPO)
        if run.returncode != 0:
            raise SystemExit(f"lockship build failed ({run.returncode}):\n{run.tail()}")
        installer = Path(next(t for _, s, t in reversed(run.lines) if s == "out" and t))
        return run.seconds, installer

    def plain_copy(self, env: Env, target: Path, with_stub: bool = False) -> tuple[float, float]:
        """Seconds to ``cat`` the archives (and the stub) into one file, and to fsync it."""
        target.unlink(missing_ok=True)
        sources = ([str(self.stub)] if with_stub else []) + [str(p) for p in env.archives]
        drop_dirty_pages()
        t0 = time.perf_counter()
        with open(target, "wb") as f:
            subprocess.run(["cat", *sources], stdout=f, check=True)
            copied = time.perf_counter() - t0
            os.fsync(f.fileno())
            synced = time.perf_counter() - t0
        target.unlink()
        return copied, synced

    def measure_build(self, env: Env) -> Path:
        out = self.work / "installers" / env.spec.name
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.sh"):
            old.unlink()
        shutil.rmtree(self.work / "build-cache" / env.spec.name, ignore_errors=True)
        log(f"[{env.spec.name}] cold build (fills the package cache)...")
        cold, installer = self.build(env, out)
        warm: list[float] = []
        copy: list[float] = []
        copy_stub: list[float] = []
        copy_fsync: list[float] = []
        for i in range(self.repeat):
            log(f"[{env.spec.name}] build {i + 1}/{self.repeat}: warm build vs cat...")
            copied, synced = self.plain_copy(env, out / "plain-copy.bin")
            copy.append(copied)
            copy_fsync.append(synced)
            copy_stub.append(self.plain_copy(env, out / "plain-copy.bin", with_stub=True)[1])
            installer.unlink()
            seconds, installer = self.build(env, out)
            warm.append(seconds)
        size = installer.stat().st_size
        archives = env.archive_bytes
        stub_size = self.stub.stat().st_size
        self.results.setdefault("build", {})[env.spec.name] = {
            "cold_s": cold,
            "warm_s": warm,
            "plain_copy_s": copy,
            "plain_copy_fsync_s": copy_fsync,
            "plain_copy_with_stub_fsync_s": copy_stub,
            "warm_median_s": median(warm),
            "plain_copy_median_s": median(copy),
            # the reference makes the same bytes (stub and archives) equally durable: the
            # builder fsyncs the installer before renaming it into place
            "ratio": median(warm) / median(copy_stub),
            "ratio_vs_cat_archives": median(warm) / median(copy),
            "installer_bytes": size,
            "archive_bytes": archives,
            "stub_bytes": stub_size,
            "size_ratio": size / (archives + stub_size),
            "size_overhead_bytes": size - archives - stub_size,
        }
        return installer

    def build_only(self, env: Env) -> Path:
        out = self.work / "installers" / env.spec.name
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.sh"):
            old.unlink()
        log(f"[{env.spec.name}] building the installer...")
        seconds, installer = self.build(env, out)
        self.results.setdefault("build", {})[env.spec.name] = {
            "cold_or_warm_s": seconds,
            "installer_bytes": installer.stat().st_size,
            "archive_bytes": env.archive_bytes,
            "stub_bytes": self.stub.stat().st_size,
        }
        return installer

    # -- install -------------------------------------------------------------------------
    def run_installer(self, env: Env, installer: Path, tag: str) -> tuple[Run, Path]:
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-installer-{tag}")
        prefix = base / "prefix"
        drop_dirty_pages()
        run = timed_run(
            ["bash", str(installer), "-b", "-p", str(prefix)],
            sample_interval=self.interval,
            env=self.installer_env,
        )
        if run.returncode != 0:
            raise SystemExit(f"the installer failed ({run.returncode}):\n{run.tail()}")
        return run, prefix

    def run_bare(self, env: Env, tag: str) -> tuple[Run, Path, dict[str, Any]]:
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-bare-{tag}")
        prefix, cache = base / "prefix", base / "cache"
        drop_dirty_pages()
        command = [sys.executable, "-c", BARE_INSTALL, str(env.channel), str(prefix), str(cache)]
        run = timed_run([*command, PLATFORM], sample_interval=self.interval)
        if run.returncode != 0:
            raise SystemExit(f"bare rattler install failed ({run.returncode}):\n{run.tail()}")
        inner = json.loads(next(t for _, s, t in reversed(run.lines) if s == "out" and t))
        return run, prefix, inner

    def measure_startup(self, installers: dict[str, Path], repeat: int) -> dict[str, Any]:
        """Seconds to the first progress line, the installers taking turns (in the other
        order at every turn, so that neither always runs right after the other).

        Each run is stopped (SIGTERM to its process group, which the installer must handle by
        rolling back) as soon as the first line arrives, so many turns are cheap and every
        payload size sees the same conditions.
        """
        times: dict[str, list[float]] = {name: [] for name in installers}
        first_lines: dict[str, str] = {}
        for i in range(repeat):
            order = list(installers.items())
            if i % 2:
                order.reverse()
            log(f"startup {i + 1}/{repeat}: " + " vs ".join(name for name, _ in order))
            for name, installer in order:
                base = fresh_dir(self.runs_dir / f"startup-{name}")
                drop_dirty_pages()
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    ["bash", str(installer), "-b", "-p", str(base / "prefix")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.installer_env,
                    start_new_session=True,
                )
                assert proc.stderr is not None
                line = proc.stderr.readline().decode(errors="replace").rstrip()
                times[name].append(time.perf_counter() - t0)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                rest = proc.communicate(timeout=120)[1].decode(errors="replace")
                if not line or line.startswith("ERROR"):
                    raise SystemExit(f"the installer {installer} failed to start:\n{line}\n{rest}")
                first_lines.setdefault(name, line)
                shutil.rmtree(base)
        result = {
            "method": "first stderr line, then SIGTERM; installers take turns",
            "seconds": times,
            "median_s": {name: median(v) for name, v in times.items()},
            "first_line": first_lines,
        }
        self.results["startup"] = result
        return result

    def check_prefixes(self, env: Env, installed: Path, bare: Path) -> dict[str, Any]:
        """Both routes must produce the same files, relocated."""
        a, b = tree_files(installed), tree_files(bare)
        problems: list[str] = []
        for rel, kind in (
            (env.stats.get("example_text_placeholder"), "text"),
            (env.stats.get("example_binary_placeholder"), "binary"),
        ):
            if not rel:
                continue
            data = (installed / rel).read_bytes()
            if PLACEHOLDER.encode() in data:
                problems.append(f"{rel}: {kind} placeholder not replaced")
            expected = str(installed).encode() + (b"\0" if kind == "binary" else b"")
            if expected not in data:
                problems.append(f"{rel}: the prefix is not in the relocated {kind} file")
        return {
            "files_installer": len(a),
            "files_bare": len(b),
            "only_in_installer": sorted(a - b)[:20],
            "only_in_bare": sorted(b - a)[:20],
            "relocation_problems": problems,
        }

    def measure_install(
        self, env: Env, installer: Path, *, with_bare: bool, peer: Path | None = None
    ) -> dict[str, Any]:
        peer_s: list[float] = []
        runs: list[dict[str, Any]] = []
        bare_runs: list[dict[str, Any]] = []
        check: dict[str, Any] = {}
        kinds = ["installer"] + (["bare"] if with_bare else []) + (["peer"] if peer else [])
        for i in range(self.repeat):
            # every run follows the removal of the run before it (on this ext4 with online
            # discard a removal slows the writes after it) and each tool goes first in turn
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            log(f"[{env.spec.name}] install {i + 1}/{self.repeat}: {', '.join(order)}...")
            kept: dict[str, Path] = {}
            for kind in order:
                if kind == "installer":
                    run, prefix = self.run_installer(env, installer, str(i))
                    first = run.first_line("err")
                    runs.append(
                        {
                            "seconds": run.seconds,
                            "first_line_s": first[0] if first else math.nan,
                            "first_line": first[1] if first else None,
                            "phases": phase_breakdown(run),
                            "peak_rss_mb": run.peak_rss_mb,
                            "peak_anon_mb": run.peak_anon_mb,
                            "peak_pss_mb": run.peak_pss_mb,
                            "peak_processes": run.peak_processes,
                            "sampler": run.sampler,
                            "lines": run.lines,
                        }
                    )
                    kept["installer"] = prefix
                elif kind == "bare":
                    bare, bare_prefix, inner = self.run_bare(env, str(i))
                    bare_runs.append(
                        {
                            "seconds": bare.seconds,
                            "inner": inner,
                            "peak_rss_mb": bare.peak_rss_mb,
                            "peak_anon_mb": bare.peak_anon_mb,
                            "peak_pss_mb": bare.peak_pss_mb,
                            "sampler": bare.sampler,
                        }
                    )
                    kept["bare"] = bare_prefix
                else:
                    assert peer is not None
                    peer_s.append(self.run_peer(env, peer, str(i)))
                if i > 0:  # the first turn keeps both prefixes to compare them
                    for path in kept.values():
                        shutil.rmtree(path.parent)
                    kept.clear()
            if i == 0 and "bare" in kept:
                check = self.check_prefixes(env, kept["installer"], kept["bare"])
            for path in kept.values():
                shutil.rmtree(path.parent)
        result: dict[str, Any] = {
            "installer_s": [r["seconds"] for r in runs],
            "installer_median_s": median([r["seconds"] for r in runs]),
            "first_line_s": [r["first_line_s"] for r in runs],
            "first_line_median_s": median([r["first_line_s"] for r in runs]),
            "first_line": runs[0]["first_line"],
            "peak_rss_mb": [r["peak_rss_mb"] for r in runs],
            "peak_rss_median_mb": median([r["peak_rss_mb"] for r in runs]),
            "peak_anon_median_mb": median([r["peak_anon_mb"] for r in runs]),
            "peak_pss_median_mb": median([r["peak_pss_mb"] for r in runs]),
            "phases_median_s": {
                k: median([r["phases"].get(k, math.nan) for r in runs]) for k in runs[0]["phases"]
            },
            "runs": runs,
        }
        if peer_s:
            result.update(
                {
                    "peer_s": peer_s,
                    "peer_median_s": median(peer_s),
                    "ratio_vs_peer": result["installer_median_s"] / median(peer_s),
                }
            )
        if with_bare:
            result.update(
                {
                    "bare_s": [r["seconds"] for r in bare_runs],
                    "bare_median_s": median([r["seconds"] for r in bare_runs]),
                    "bare_install_only_median_s": median(
                        [r["inner"]["install_s"] for r in bare_runs]
                    ),
                    "bare_peak_rss_median_mb": median([r["peak_rss_mb"] for r in bare_runs]),
                    "bare_peak_anon_median_mb": median([r["peak_anon_mb"] for r in bare_runs]),
                    "bare_peak_pss_median_mb": median([r["peak_pss_mb"] for r in bare_runs]),
                    "ratio": median([r["seconds"] for r in runs])
                    / median([r["seconds"] for r in bare_runs]),
                    "bare_runs": bare_runs,
                    "prefix_check": check,
                }
            )
        self.results.setdefault("install", {})[env.spec.name] = result
        return result

    # -- update ------------------------------------------------------------------------
    def measure_update(self, env: Env, installer: Path) -> dict[str, Any]:
        """Fresh install of v1, then ``-u`` to a v2 that changes the smallest package, in
        turns: the update's time against the fresh install's (and the snapshot's share)."""
        v2 = self._one_package_changed(env)
        fresh: list[float] = []
        update: list[float] = []
        snapshot: list[float] = []
        for i in range(self.repeat):
            log(f"[{env.spec.name}] update {i + 1}/{self.repeat}: fresh install, then -u...")
            run, prefix = self.run_installer(env, installer, f"update-{i}")
            fresh.append(run.seconds)
            drop_dirty_pages()
            command = ["bash", str(v2), "-b", "-u", "-p", str(prefix)]
            updated = timed_run(command, sample_interval=None, env=self.installer_env)
            if updated.returncode != 0:
                raise SystemExit(f"the update failed ({updated.returncode}):\n{updated.tail()}")
            update.append(updated.seconds)
            snapshot.append(_snapshot_seconds(prefix))
            shutil.rmtree(prefix.parent)
        result = {
            "fresh_s": fresh,
            "update_s": update,
            "snapshot_s": snapshot,
            "fresh_median_s": median(fresh),
            "update_median_s": median(update),
            "snapshot_median_s": median(snapshot),
            "ratio": median(update) / median(fresh),
            "changed_packages": 1,
            "packages": env.stats["packages"],
        }
        self.results["update"] = result
        return result

    def measure_snapshot(self, env: Env, installer: Path) -> None:
        """What an update's snapshot costs on an installed ``env`` (taken, then discarded)."""
        seconds = []
        _, prefix = self.run_installer(env, installer, "snapshot")
        for _ in range(self.repeat):
            drop_dirty_pages()
            seconds.append(_snapshot_seconds(prefix))
        shutil.rmtree(prefix.parent)
        self.results.setdefault("snapshot", {})[env.spec.name] = {
            "seconds": seconds,
            "median_s": median(seconds),
            "files": env.stats["files"],
        }

    def _one_package_changed(self, env: Env) -> Path:
        """An installer of ``env`` whose smallest package has a new version."""
        root = fresh_dir(self.work / "update" / env.spec.name)
        records = channel_records(env.channel, env.channel.as_uri(), PLATFORM)
        smallest = min(records, key=lambda r: r.size or 0)
        name = smallest.name.normalized
        changed = root / "channel"
        write_conda_package(changed, name, "99.0", files={f"share/{name}/changed.txt": "v2\n"})
        index_channel(changed)
        (new,) = channel_records(changed, changed.as_uri(), PLATFORM, [name])
        workspace = root / "workspace"
        others = [r for r in records if r.name.normalized != name]
        write_pixi_lock(
            workspace / "pixi.lock", {PLATFORM: [*others, new]}, channel_url=env.channel.as_uri()
        )
        (workspace / "pixi.toml").write_text(
            f'[workspace]\nname = "bench-{env.spec.name}"\nversion = "2.0"\n'
        )
        cache = self.work / "build-cache" / env.spec.name
        command = [sys.executable, "-m", "lockship.builder.cli", "build", str(workspace)]
        command += ["-o", str(root), "--cache-dir", str(cache), "--stub", str(self.stub)]
        run = timed_run(command, sample_interval=None, cwd=REPO)
        if run.returncode != 0:
            raise SystemExit(f"lockship build (v2) failed ({run.returncode}):\n{run.tail()}")
        return Path(next(t for _, s, t in reversed(run.lines) if s == "out" and t))


def _snapshot_seconds(prefix: Path) -> float:
    """What taking (and discarding) the update's snapshot of ``prefix`` costs."""
    from lockship.stub.snapshot import take_snapshot

    t0 = time.perf_counter()
    take_snapshot(prefix).discard()
    return time.perf_counter() - t0


# =============================================================================================
# Report
# =============================================================================================


def _fmt(value: float, unit: str, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f} {unit}".strip()


def _rss(result: dict[str, Any], total: str, anon: str) -> str:
    return f"{_fmt(result[total], 'MB', 0)} (anon {_fmt(result[anon], 'MB', 0)})"


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: absolute values, ratio, target and whether it is met."""
    rows: list[dict[str, Any]] = []
    build = results["build"]["main"]
    inst = results["install"]
    rows.append(
        {
            "measure": "build, warm cache (main)",
            "lockship": _fmt(build["warm_median_s"], "s"),
            "reference": "cat stub + archives, fsync "
            f"{_fmt(median(build['plain_copy_with_stub_fsync_s']), 's')}",
            "ratio": build["ratio"],
            "target": f"<= {TARGETS['build_ratio']:.2f}x",
            "met": build["ratio"] <= TARGETS["build_ratio"],
        }
    )
    rows.append(
        {
            "measure": "build vs cat archives (info)",
            "lockship": _fmt(build["warm_median_s"], "s"),
            "reference": f"cat archives, no fsync {_fmt(build['plain_copy_median_s'], 's')} "
            f"(fsync {_fmt(median(build['plain_copy_fsync_s']), 's')})",
            "ratio": build["ratio_vs_cat_archives"],
            "target": f"(<= {TARGETS['build_ratio']:.2f}x)",
            "met": None,
        }
    )
    rows.append(
        {
            "measure": "installer size (main)",
            "lockship": _fmt(build["installer_bytes"] / MB, "MB", 1),
            "reference": f"archives {build['archive_bytes'] / MB:.1f} + stub "
            f"{build['stub_bytes'] / MB:.1f} MB",
            "ratio": build["size_ratio"],
            "target": f"<= {TARGETS['size_ratio']:.2f}x",
            "met": build["size_ratio"] <= TARGETS["size_ratio"],
        }
    )
    stub_mb = build["stub_bytes"] / MB
    rows.append(
        {
            "measure": "the stub inside a .sh installer",
            "lockship": _fmt(stub_mb, "MB", 1),
            "reference": "-",
            "ratio": None,
            "target": f"<= {TARGETS['stub_mb']:.0f} MB",
            "met": stub_mb <= TARGETS["stub_mb"],
        }
    )
    main = inst["main"]
    rows.append(
        {
            "measure": "install (main)",
            "lockship": _fmt(main["installer_median_s"], "s"),
            "reference": f"bare rattler {_fmt(main['bare_median_s'], 's')}",
            "ratio": main["ratio"],
            "target": f"<= {TARGETS['install_ratio']:.2f}x",
            "met": main["ratio"] <= TARGETS["install_ratio"],
        }
    )
    big = inst.get("1gb")
    if big is not None:
        rows.append(
            {
                "measure": "install (1 GB, info)",
                "lockship": _fmt(big["installer_median_s"], "s"),
                "reference": f"bare rattler {_fmt(big['bare_median_s'], 's')}",
                "ratio": big["ratio"],
                "target": f"(<= {TARGETS['install_ratio']:.2f}x)",
                "met": None,
            }
        )
    startup, turns = results["startup"]["median_s"], results["startup"]["seconds"]
    small_start = startup["1mb"]
    rows.append(
        {
            "measure": "startup, 1 MB payload",
            "lockship": f"{_fmt(small_start, 's')} ({_spread(turns['1mb'])})",
            "reference": "-",
            "ratio": None,
            "target": f"<= {TARGETS['startup_s']} s",
            "met": small_start <= TARGETS["startup_s"],
        }
    )
    if big is not None:
        big_start = startup["1gb"]
        spread = big_start / small_start
        rows.append(
            {
                "measure": "startup, 1 GB payload",
                "lockship": f"{_fmt(big_start, 's')} ({_spread(turns['1gb'])})",
                "reference": f"1 MB payload {_fmt(small_start, 's')}",
                "ratio": spread,
                "target": f"<= {TARGETS['startup_s']} s, within {TARGETS['startup_spread']:.0%}",
                "met": big_start <= TARGETS["startup_s"]
                and abs(spread - 1) <= TARGETS["startup_spread"],
            }
        )
        rows.append(
            {
                "measure": "peak RSS, tree (1 GB)",
                "lockship": _rss(big, "peak_rss_median_mb", "peak_anon_median_mb"),
                "reference": "bare rattler "
                + _rss(big, "bare_peak_rss_median_mb", "bare_peak_anon_median_mb"),
                "ratio": big["peak_rss_median_mb"] / big["bare_peak_rss_median_mb"],
                "target": f"<= {TARGETS['peak_rss_mb']:.0f} MB",
                "met": big["peak_rss_median_mb"] <= TARGETS["peak_rss_mb"],
            }
        )
        rows.append(
            {
                "measure": "peak PSS, tree (1 GB, info)",
                "lockship": _fmt(big["peak_pss_median_mb"], "MB", 0),
                "reference": f"bare rattler {_fmt(big['bare_peak_pss_median_mb'], 'MB', 0)}",
                "ratio": big["peak_pss_median_mb"] / big["bare_peak_pss_median_mb"],
                "target": f"({TARGETS['peak_rss_mb']:.0f} MB)",
                "met": None,
            }
        )
    else:
        rows.append(
            {
                "measure": "startup, 1 GB payload",
                "lockship": "skipped",
                "reference": "-",
                "ratio": None,
                "target": f"<= {TARGETS['startup_s']} s, within {TARGETS['startup_spread']:.0%}",
                "met": None,
            }
        )
    rows.append(
        {
            "measure": "peak RSS, tree (main, info)" if big else "peak RSS, tree (main)",
            "lockship": _rss(main, "peak_rss_median_mb", "peak_anon_median_mb"),
            "reference": "bare rattler "
            + _rss(main, "bare_peak_rss_median_mb", "bare_peak_anon_median_mb"),
            "ratio": main["peak_rss_median_mb"] / main["bare_peak_rss_median_mb"],
            "target": f"(<= {TARGETS['peak_rss_mb']:.0f} MB at 1 GB)",
            "met": None,
        }
    )
    rows += peer_rows(results)
    update = results.get("update")
    if update is not None:
        rows.append(
            {
                "measure": f"update 1 of {update['packages']} packages (main)",
                "lockship": _fmt(update["update_median_s"], "s"),
                "reference": f"fresh install {_fmt(update['fresh_median_s'], 's')} (snapshot "
                f"{_fmt(update['snapshot_median_s'], 's', 3)}"
                + (
                    f"; 1 GB env {_fmt(results['snapshot']['1gb']['median_s'], 's', 3)}"
                    if "1gb" in results.get("snapshot", {})
                    else ""
                )
                + ")",
                "ratio": update["ratio"],
                "target": f"<= {TARGETS['update_ratio']:.2f}x",
                "met": update["ratio"] <= TARGETS["update_ratio"],
            }
        )
    return rows


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def peer_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """conda-ship's column: install time, file size, warm build (when it was measured)."""
    peer = results.get("peer")
    if not peer:
        return []
    rows = []
    main = results["install"]["main"]
    if "peer_s" in main:
        rows.append(
            {
                "measure": f"install vs {peers.NAME} (main)",
                "lockship": f"{_fmt(main['installer_median_s'], 's')} "
                f"({_spread(main['installer_s'])})",
                "reference": f"{peers.NAME} {_fmt(main['peer_median_s'], 's')} "
                f"({_spread(main['peer_s'])})",
                "ratio": main["ratio_vs_peer"],
                "target": f"<= {TARGETS['peer_install_ratio']:.2f}x",
                "met": main["ratio_vs_peer"] <= TARGETS["peer_install_ratio"],
            }
        )
    sizes = (("main", None), ("1mb", None), ("22mb", TARGETS["peer_size_ratio"]))
    for name, target in sizes:
        if name not in peer:
            continue
        ours = results["build"][name]["installer_bytes"]
        ratio = ours / peer[name]["file_bytes"]
        rows.append(
            {
                "measure": f"file vs {peers.NAME} ({name})" + ("" if target else ", info"),
                "lockship": _fmt(ours / MB, "MB", 1),
                "reference": f"{peers.NAME} {_fmt(peer[name]['file_bytes'] / MB, 'MB', 1)}",
                "ratio": ratio,
                "target": f"<= {target:.2f}x" if target else "-",
                "met": ratio <= target if target else None,
            }
        )
    if "main" in peer:
        ours = results["build"]["main"]["warm_median_s"]
        ratio = ours / peer["main"]["warm_build_median_s"]
        rows.append(
            {
                "measure": f"warm build vs {peers.NAME} (main)",
                "lockship": _fmt(ours, "s"),
                "reference": f"{peers.NAME} {_fmt(peer['main']['warm_build_median_s'], 's')}",
                "ratio": ratio,
                "target": "< 1.00x",
                "met": ratio < 1.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    headers = ["measure", "lockship", "reference", "ratio", "target", "met"]

    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]
        if key == "ratio":
            return "-" if value is None else f"{value:.2f}x"
        if key == "met":
            return "n/a" if value is None else ("yes" if value else "NO")
        return str(value)

    table = [[cell(r, h) for h in headers] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    print()
    for name, inst in results["install"].items():
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in inst["phases_median_s"].items())
        extra = ""
        if "bare_median_s" in inst:
            extra = (
                f"; bare rattler {inst['bare_median_s']:.2f}s in total, "
                f"{inst['bare_install_only_median_s']:.2f}s inside rattler.install"
            )
        print(f"{name}: installer {inst['installer_median_s']:.2f}s = {phases}{extra}")
        problems = inst.get("prefix_check", {}).get("relocation_problems")
        if problems:
            print(f"  WARNING: {problems}")
    startup = results["startup"]
    turns = "; ".join(
        f"{name} " + " ".join(f"{t:.2f}" for t in times)
        for name, times in startup["seconds"].items()
    )
    print(f"startup runs (s, to the first progress line, stopped there): {turns}")


# =============================================================================================
# Main
# =============================================================================================


def find_stub(explicit: Path | None) -> Path:
    """The stub ``lockship build`` would use here (``--stub``, the stub folder, the cache, or
    a fresh freeze): the builder's own lookup."""
    from lockship.builder.errors import StubError
    from lockship.builder.network import NetworkOptions, make_client
    from lockship.builder.paths import default_cache_dir
    from lockship.builder.settings import Settings
    from lockship.builder.stubs.lookup import find_stubs

    if explicit is None:
        log("finding or freezing the installer stub (a first freeze takes about two minutes)...")
    defaults = Settings()
    client = make_client(NetworkOptions(), timeout=defaults.timeout)
    try:
        found = find_stubs(
            [PLATFORM],
            default_cache_dir(),
            client=client,
            explicit={PLATFORM: explicit} if explicit is not None else None,
            retries=defaults.retries,
            on_freeze=log,
        )
    except StubError as e:
        raise SystemExit(str(e)) from e
    return found[PLATFORM].resolve()


def machine_info(stub: Path) -> dict[str, Any]:
    import rattler

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "py_rattler": getattr(rattler, "__version__", "?"),
        "stub": str(stub),
        "stub_bytes": stub.stat().st_size,
        "stub_crc32": f"{zlib.crc32(stub.read_bytes()):08x}",
        "git_head": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "git_dirty": bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "builder", "stub"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        ),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size and file count of the main environment (default 1.0: "
        "~300 MB, ~10,000 files; 0.1 for a quick run)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--skip-1gb",
        action="store_true",
        help="skip the 1 GB payload (startup spread and peak memory)",
    )
    parser.add_argument("--stub", type=Path, help="frozen stub (default: find or freeze one)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/lockship-bench"),
        help="work folder; generated channels are cached here (default /tmp/lockship-bench)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        help="where the timed runs install (default: the work folder); a tmpfs such as "
        "/dev/shm/lockship-bench takes the disk out of the install figures",
    )
    parser.add_argument("--json", type=Path, help="results file (default <work>/bench.json)")
    parser.add_argument(
        "--peer",
        choices=[peers.NAME],
        help=f"also build and install every environment with {peers.NAME} "
        f"{peers.VERSION} and print its column",
    )
    parser.add_argument(
        "--peer-home",
        type=Path,
        default=peers.DEFAULT_HOME,
        help=f"folder holding cs and cs-template (default {peers.DEFAULT_HOME})",
    )
    parser.add_argument(
        "--startup-repeat",
        type=int,
        default=12,
        help="turns of the start-up measurement, 1 MB and 1 GB installers alternating "
        "(default 12; each turn takes about a second)",
    )
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=0.02,
        help="memory sampling interval in seconds (default 0.02)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes generating packages (default: all CPUs)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.startup_repeat < 1 or args.scale <= 0:
        parser.error("--repeat and --startup-repeat must be >= 1, --scale > 0")
    args.work = args.work.resolve()
    args.runs = args.runs.resolve() if args.runs else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    json_path: Path = args.json or args.work / "bench.json"
    stub = find_stub(args.stub)
    specs = env_specs(args.scale)
    names = ["main", "1mb"] + (["22mb"] if args.peer else []) + ([] if args.skip_1gb else ["1gb"])
    envs = {name: ensure_env(args.work, specs[name], args.jobs) for name in names}
    bench = Bench(args, stub)
    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        log(f"WARNING: load average {load_before[0]:.2f}: other work on this machine adds noise")

    installers: dict[str, Path] = {}

    def main_env() -> None:
        installers["main"] = bench.measure_build(envs["main"])
        peer = bench.peer_build(envs["main"])
        bench.measure_install(envs["main"], installers["main"], with_bare=True, peer=peer)
        bench.measure_update(envs["main"], installers["main"])

    def small_env() -> None:
        installers["1mb"] = bench.build_only(envs["1mb"])
        bench.peer_build(envs["1mb"])
        bench.measure_install(envs["1mb"], installers["1mb"], with_bare=False)

    def big_env() -> None:
        installers["1gb"] = bench.build_only(envs["1gb"])
        bench.measure_install(envs["1gb"], installers["1gb"], with_bare=True)
        bench.measure_snapshot(envs["1gb"], installers["1gb"])

    def peer_size_env() -> None:
        installers["22mb"] = bench.build_only(envs["22mb"])
        bench.peer_build(envs["22mb"])

    steps: list[tuple[str, Callable[[], None]]] = [("main", main_env), ("1mb", small_env)]
    if args.peer:
        steps.append(("22mb", peer_size_env))
    if not args.skip_1gb:
        steps.append(("1gb", big_env))
    for _, step in steps:
        step()
    bench.measure_startup(
        {name: installers[name] for name in ("1mb", "1gb") if name in installers},
        args.startup_repeat,
    )
    shutil.rmtree(bench.runs_dir, ignore_errors=True)
    shutil.rmtree(bench.tmp, ignore_errors=True)

    rows = evaluate(bench.results)
    document: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(stub),
        "environments": {
            name: {"spec": asdict(env.spec), "stats": env.stats, "root": str(env.root)}
            for name, env in envs.items()
        },
        "targets": TARGETS,
        "summary": rows,
        "results": bench.results,
        "bench_seconds": round(time.perf_counter() - started, 1),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=1, default=str))
    main_stats = envs["main"].stats
    print(
        f"\nlockship benchmark: main env {main_stats['packages']} packages, "
        f"{main_stats['files']} files, {main_stats['archive_bytes'] / MB:.0f} MB of archives; "
        f"medians of {args.repeat}; stub {stub.stat().st_size / MB:.0f} MB\n"
    )
    print_table(rows, bench.results)
    load = document["load_average"]
    print(
        f"\nload average before/after: {load['before'][0]:.2f} / {load['after'][0]:.2f} "
        f"(1-min; {os.cpu_count()} CPUs)\nresults: {json_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
