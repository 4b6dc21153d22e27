"""Synthetic but realistic conda environments of a chosen size, for measurements and tests.

An :class:`EnvSpec` says how big an environment is (packages, bytes of archives, files) and
what it is made of; :func:`plan_env` turns it into one :class:`PackagePlan` per package and
:func:`write_package` writes one plan as a real ``.conda`` archive. The contents look like a
real environment to the code that installs them:

- many small compressible text files (source-code-like tokens with Zipf weights, about 3-4x
  with zstd) and fewer large random (incompressible) binaries;
- a share of text files with a text prefix placeholder and of binaries with a NUL-terminated
  255-character binary placeholder (conda-build's long prefix), which an install must relocate;
- a few symlinks, noarch and platform packages, and dependencies between packages.

Everything is a pure function of the spec (seeded generators): the same spec gives the same
archives, byte for byte, so a caller can cache them under :meth:`EnvSpec.key`, as
:func:`ensure_env` does (a channel, its index and a pixi workspace locking every package).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lockship.builder.testing.channels import (
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)

__all__ = [
    "GENERATOR_VERSION",
    "MB",
    "PLACEHOLDER",
    "EnvSpec",
    "PackagePlan",
    "SyntheticEnv",
    "WrittenPackage",
    "ensure_env",
    "gen_text",
    "plan_env",
    "text_compression_ratio",
    "write_package",
]

MB = 1_000_000  # sizes here are in 10^6 bytes, like the installer's own figures

#: Bump when the generator changes, so that cached channels are regenerated.
GENERATOR_VERSION = 1

#: conda-build style long prefix placeholder (255 characters), used for text and binary files.
PLACEHOLDER = (
    "/home/conda/feedstock_root/build_artifacts/bench_1704067200/_h_env_" + "placehold_" * 30
)[:255]


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


@dataclass(frozen=True)
class PackagePlan:
    """One package to write: its identity and the sizes of its files."""

    name: str
    version: str
    subdir: str
    kind: str  # "pylib" (mostly text), "native" (mostly binaries) or "mixed"
    depends: tuple[str, ...]
    text_sizes: tuple[int, ...]
    binary_sizes: tuple[int, ...]
    text_placeholders: int  # how many of the text files get one
    binary_placeholders: int  # how many of the binary files get one
    seed: int


@dataclass(frozen=True)
class WrittenPackage:
    """What :func:`write_package` wrote."""

    archive: Path
    archive_size: int
    files: int
    symlinks: int
    content_bytes: int
    text_placeholder_files: tuple[str, ...]
    binary_placeholder_files: tuple[str, ...]


def _vocabulary() -> tuple[list[str], list[float]]:
    """Source-code-like tokens with Zipf weights (compresses about like real code)."""
    rng = random.Random(12345)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(rng.choices(letters, k=rng.randint(2, 12))) + rng.choice(["", "_", "s", "_id"])
        for _ in range(6000)
    ]
    common = [
        *("\n", "\n    ", "\n        ", " = ", "(", ")", ", ", ".", ":", "self", "def "),
        *("return ", "if ", "else:", "import ", "for ", " in ", "None", "#", '"', "0", "1"),
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
    """``size`` bytes of source-code-like text drawn with ``rng``."""
    if size <= 0:
        return b""
    words = rng.choices(_TOKENS, cum_weights=_CUM_WEIGHTS, k=size // 4 + 16)
    data = " ".join(words).encode()
    while len(data) < size:  # rare: short tokens drawn
        data += b" ".join(w.encode() for w in rng.choices(_TOKENS, k=size // 4 + 16))
    return data[:size]


def text_compression_ratio() -> float:
    """How much zstd (level 3, as in ``.conda`` archives) shrinks the generated text."""
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


def plan_env(spec: EnvSpec, text_ratio: float, platform: str) -> list[PackagePlan]:
    """The packages of ``spec`` for ``platform``; ``text_ratio`` is what zstd makes of text
    (:func:`text_compression_ratio`), so that the archives come out near ``archive_bytes``."""
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

    def sizes(count: int, total: int) -> list[int]:
        if count == 0:
            return []
        weights = [rng.lognormvariate(0, 1.2) for _ in range(count)]
        return [max(1, s) for s in _split(total, weights)]

    plans: list[PackagePlan] = []
    names: list[str] = []
    for i, kind in enumerate(plan_kinds):
        name = f"bench-{spec.name}-{kind}-{i:02d}"
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
                subdir="noarch" if kind == "pylib" and i % 2 == 0 else platform,
                kind=kind,
                depends=tuple(depends),
                text_sizes=tuple(t_sizes),
                binary_sizes=tuple(b_sizes),
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


def write_package(channel: Path, plan: PackagePlan) -> WrittenPackage:
    """Write the archive of ``plan`` into ``channel`` (safe to run in a worker process)."""
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
        depends=list(plan.depends),
        text_placeholders=text_ph,
        binary_placeholders=bin_ph,
    )
    return WrittenPackage(
        archive=archive,
        archive_size=archive.stat().st_size,
        files=len(files),
        symlinks=len(symlinks),
        content_bytes=sum(len(v) for v in files.values()),
        text_placeholder_files=tuple(sorted(text_ph)),
        binary_placeholder_files=tuple(sorted(bin_ph)),
    )


@dataclass(frozen=True)
class SyntheticEnv:
    """A generated environment on disk: its channel and a pixi workspace that locks it."""

    spec: EnvSpec
    root: Path
    channel: Path
    workspace: Path
    archives: tuple[Path, ...]
    stats: dict[str, Any]  # what was generated (JSON: counts, sizes, example files)

    @property
    def archive_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.archives)


def ensure_env(
    work: Path,
    spec: EnvSpec,
    platform: str,
    *,
    jobs: int,
    on_generate: Callable[[str], None] | None = None,
) -> SyntheticEnv:
    """The environment ``spec`` for ``platform`` under ``work/envs``: generated with ``jobs``
    processes the first time (``on_generate`` hears about it), reused afterwards."""
    say = on_generate or (lambda _: None)
    root = work / "envs" / f"{spec.name}-{spec.key()}"
    marker = root / "env.json"
    channel = root / "channel"
    workspace = root / "workspace"
    if not marker.is_file():
        if root.exists():
            shutil.rmtree(root)
        t0 = time.perf_counter()
        say(f"generating the {spec.name!r} channel in {root} (cached for later runs)...")
        channel.mkdir(parents=True)
        plans = plan_env(spec, text_compression_ratio(), platform)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            written = list(pool.map(write_package, [channel] * len(plans), plans))
        index_channel(channel)
        records = channel_records(channel, channel.as_uri(), platform)
        write_pixi_lock(workspace / "pixi.lock", {platform: records}, channel_url=channel.as_uri())
        (workspace / "pixi.toml").write_text(
            f'[workspace]\nname = "bench-{spec.name}"\nversion = "1.0"\n'
            f'channels = ["{channel.as_uri()}/"]\nplatforms = ["{platform}"]\n'
        )
        stats = _stats(channel, written, time.perf_counter() - t0)
        marker.write_text(json.dumps({"spec": asdict(spec), "stats": stats}, indent=2))
        say(
            f"  {stats['packages']} packages, {stats['files']} files, "
            f"{stats['archive_bytes'] / MB:.1f} MB of archives "
            f"({stats['content_bytes'] / MB:.1f} MB of content) in {stats['generated_in_s']} s"
        )
    stats = json.loads(marker.read_text())["stats"]
    return SyntheticEnv(
        spec=spec,
        root=root,
        channel=channel,
        workspace=workspace,
        archives=tuple(channel / a for a in stats["archives"]),
        stats=stats,
    )


def _stats(channel: Path, written: Sequence[WrittenPackage], seconds: float) -> dict[str, Any]:
    text_ph = [f for w in written for f in w.text_placeholder_files]
    binary_ph = [f for w in written for f in w.binary_placeholder_files]
    return {
        "packages": len(written),
        "files": sum(w.files for w in written),
        "symlinks": sum(w.symlinks for w in written),
        "content_bytes": sum(w.content_bytes for w in written),
        "archive_bytes": sum(w.archive_size for w in written),
        "text_placeholder_files": len(text_ph),
        "binary_placeholder_files": len(binary_ph),
        "example_text_placeholder": text_ph[0] if text_ph else None,
        "example_binary_placeholder": binary_ph[0] if binary_ph else None,
        "archives": [w.archive.relative_to(channel).as_posix() for w in written],
        "generated_in_s": round(seconds, 1),
    }
