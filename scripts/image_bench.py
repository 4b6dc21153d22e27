"""Container image figures (docs/images.md): layer reuse between two versions, bytes a push
sends, image size against base + environment, build time against the installer build.

    python scripts/image_bench.py                 # 40 packages, ~120 MB of files
    python scripts/image_bench.py --scale 0.1     # quick run

It writes 40 synthetic conda packages (compressible text and random bytes, sizes spread like
a real environment) into a channel served on 127.0.0.1, locks v1 and a v2 where one middle-
sized package has a new version, builds both as images on a base made from Debian's own
packages (tests/containers.py), pushes v1 then v2 to a docker-registry on 127.0.0.1, and
prints (and writes as JSON to ``--json``):

* the share of v1's layer bytes that v2 reuses (goal >= 90 %), base layer included and not;
* the bytes the push of v2 sent after v1's;
* the image archive against base + the environment's files (goal <= +1 %);
* with ``--stub PATH``: the image build's time against the installer build's (goal <= 2x),
  for a rebuild (the build cache holds the unpacked packages and the layers) and for a new
  image (only the downloads cached), alternating, ``--runs`` times each: medians and spread.

Separate from scripts/bench.py (the installer benchmark); needs root, podman is not needed,
docker-registry is (scripts/container-tools.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.containers import Registry, debian_base
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from tests.runners import run_lockship

PACKAGES = 40
CHANGED = "pkg20"


def package_files(rng: random.Random, name: str, size: int, salt: str) -> dict[str, bytes | str]:
    """About ``size`` bytes in a few files: half words (compressible), half random bytes."""
    words = [f"w{i}" for i in range(500)]
    files: dict[str, bytes | str] = {}
    count = max(1, size // 400_000)
    for j in range(count):
        part = size // count
        text = " ".join(rng.choices(words, k=part // 8))[: part // 2]
        files[f"share/{name}/text{j}.txt"] = f"{salt}\n{text}"
        files[f"lib/{name}/data{j}.bin"] = rng.randbytes(part // 2)
    return files


def write_channel(channel: Path, scale: float) -> list[int]:
    rng = random.Random(7)
    # a few large packages, many small ones (a long tail, as real environments have)
    sizes = [int(scale * 60_000_000 / (i + 1)) + 20_000 for i in range(PACKAGES)]
    for i, size in enumerate(sizes):
        name = f"pkg{i:02d}"
        state = rng.getstate()
        write_conda_package(channel, name, "1.0", files=package_files(rng, name, size, "1.0"))
        if name == CHANGED:
            rng.setstate(state)
            write_conda_package(channel, name, "1.1", files=package_files(rng, name, size, "1.1"))
    index_channel(channel)
    return sizes


def layers(archive: Path) -> dict[str, int]:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    return {d["digest"]: d["size"] for d in manifest["layers"]}


def pushed_mb(stderr: str) -> float:
    line = next(x for x in stderr.splitlines() if x.startswith("Pushed "))
    return float(line.split(": ")[1].split(" MB")[0])


def _link_new(source: str, target: str) -> None:
    if not Path(target).exists():
        os.link(source, target)


def _seconds(*args: str | Path, env: dict[str, str]) -> float:
    """One build's wall time. Whatever earlier steps left to write back is written first: a
    build's fsync of its output would otherwise wait for it too (ext4 commits it together)."""
    os.sync()
    started = time.monotonic()
    run = run_lockship("build", *args, env=env)
    took = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    return took


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": [round(v, 2) for v in values],
    }


def time_builds(
    ws: Path, base: Path, stub: Path, cache: Path, work: Path, runs: int, env: dict[str, str]
) -> dict[str, Any]:
    """The installer build against two image builds, alternating, ``runs`` times each: the
    image rebuilt with the build cache it made before (unpacked packages and layers kept),
    and built with only the downloads in its cache (every package unpacked, every layer
    compressed)."""
    times: dict[str, list[float]] = {"installer": [], "image_rebuild": [], "image_new": []}
    load = [os.getloadavg()[0]]
    for run in range(runs):

        def installer() -> None:
            times["installer"].append(
                _seconds(
                    ws, "--stub", stub, "-o", work / "installer", "--cache-dir", cache, env=env
                )
            )

        def image(out: Path, build_cache: Path) -> float:
            return _seconds(
                ws, "--image-only", "--base", base, "-o", out, "--cache-dir", build_cache, env=env
            )

        def rebuild() -> None:
            times["image_rebuild"].append(image(work / "again", cache))

        def new() -> None:
            fresh = work / "fresh-cache"
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.copytree(cache / "pkgs", fresh / "pkgs", copy_function=os.link)
            times["image_new"].append(image(work / "new", fresh))
            shutil.rmtree(fresh)

        steps = [installer, rebuild, new]
        for step in steps if run % 2 == 0 else reversed(steps):
            step()
        load.append(os.getloadavg()[0])
    spread = {name: _spread(values) for name, values in times.items()}
    installer_s = spread["installer"]["median"]
    return {
        "build_times_s": spread,
        "image_rebuild_over_installer": round(spread["image_rebuild"]["median"] / installer_s, 2),
        "image_new_over_installer": round(spread["image_new"]["median"] / installer_s, 2),
        "load_average_1min": [round(x, 2) for x in load],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lockship-image-bench"))
    parser.add_argument("--stub", type=Path, help="a frozen stub: also time the installer build")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--runs", type=int, default=1, help="times each build is timed (with --stub)"
    )
    args = parser.parse_args(argv)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    channel = work / "channel"
    sizes = write_channel(channel, args.scale)
    base = debian_base(work / "base" / "layout", python=False)
    base_bytes = sum(p.stat().st_size for p in (base / "blobs" / "sha256").iterdir())
    results: dict[str, Any] = {"packages": PACKAGES, "package_bytes": sum(sizes)}
    names = [f"pkg{i:02d}" for i in range(PACKAGES) if f"pkg{i:02d}" != CHANGED]
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    with ChannelServer(channel) as server, Registry(work / "registry") as registry:
        archives = {}
        for version in ("1.0", "1.1"):
            ws = work / f"ws-{version}"
            specs = [*names, f"{CHANGED} =={version}"]
            records = channel_records(channel, server.url, "linux-64", specs)
            write_pixi_lock(ws / "pixi.lock", {"linux-64": records}, channel_url=server.url)
            (ws / "pixi.toml").write_text(f'[workspace]\nname = "bench"\nversion = "{version}"\n')
            cache = work / "cache"
            # download first, in a cache of its own whose downloads (only) join the shared
            # one: the timed build of v1 makes a new image, v2's is the next version after v1
            downloads = work / f"downloads-{version}"
            run_lockship(
                "build",
                ws,
                "--image-only",
                "--base",
                base,
                "-o",
                work / "warm",
                "--cache-dir",
                downloads,
                env=env,
            )
            shutil.copytree(
                downloads / "pkgs", cache / "pkgs", copy_function=_link_new, dirs_exist_ok=True
            )
            os.sync()
            started = time.monotonic()
            run = run_lockship(
                "build",
                ws,
                "--image-only",
                "--base",
                base,
                "-o",
                work / f"out-{version}",
                "--cache-dir",
                cache,
                "--push",
                f"{registry.address}/bench/app:{version}",
                env=env,
            )
            took = time.monotonic() - started
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                return 1
            archives[version] = Path(run.stdout.strip().splitlines()[-1])
            results[f"v{version}"] = {
                # v1: a new image; v2: after v1 (its unchanged packages and layers cached)
                "image_build_s_with_push": round(took, 2),
                "archive_bytes": archives[version].stat().st_size,
                "pushed_mb": pushed_mb(run.stderr),
            }
            if args.stub and version == "1.0":
                results |= time_builds(ws, base, args.stub, cache, work, args.runs, env)
        v1, v2 = layers(archives["1.0"]), layers(archives["1.1"])
        reused = sum(size for digest, size in v1.items() if digest in v2)
        base_layers = set(layers(archives["1.0"])) & {
            f"sha256:{p.name}" for p in (base / "blobs" / "sha256").iterdir()
        }
        env_v1 = {d: s for d, s in v1.items() if d not in base_layers}
        env_reused = sum(s for d, s in env_v1.items() if d in v2)
        results["layers"] = len(v1)
        results["reuse_share"] = round(reused / sum(v1.values()), 4)
        results["reuse_share_environment_only"] = round(env_reused / sum(env_v1.values()), 4)
        results["v2_push_sent_mb"] = results["v1.1"]["pushed_mb"]
        results["base_bytes"] = base_bytes
        results["image_over_base_plus_layers"] = round(
            results["v1.0"]["archive_bytes"] / (sum(v1.values()) + 1), 4
        )
    print(json.dumps(results, indent=2))
    if "build_times_s" in results:
        times = results["build_times_s"]
        print(
            f"build (median of {args.runs}): installer {times['installer']['median']} s, "
            f"image rebuild {times['image_rebuild']['median']} s "
            f"({results['image_rebuild_over_installer']}x), new image "
            f"{times['image_new']['median']} s ({results['image_new_over_installer']}x); "
            f"load average {results['load_average_1min']}"
        )
    print(
        f"v2 reuses {results['reuse_share']:.1%} of v1's layer bytes "
        f"({results['reuse_share_environment_only']:.1%} of the environment's; goal >= 90 %); "
        f"push of v2 after v1 sent {results['v2_push_sent_mb']:.1f} MB "
        f"(v1: {results['v1.0']['pushed_mb']:.1f} MB)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
