"""The measurements: builds, installs, updates, start-up, each against its reference."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lockship.builder.paths import host_platform
from lockship.builder.testing.channels import (
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from lockship.builder.testing.synthetic import PLACEHOLDER, SyntheticEnv

from . import log, median
from . import peer as peers
from .phases import phase_breakdown
from .runs import Run, first_stderr_line, timed_run

PLATFORM = host_platform()  # packages are built for, and installed on, this machine
REPO = Path(__file__).resolve().parents[2]

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
        self.timeout: float = args.timeout
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
                    "python scripts/benchmarks/peer.py fetches them): the peer column is skipped"
                )

    # -- the peer (conda-ship) -------------------------------------------------------------
    def peer_build(self, env: SyntheticEnv) -> Path | None:
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
            peer_env = self._peer_env(root / "build")
            run = timed_run(command, timeout=self.timeout, sample_interval=None, env=peer_env)
            if run.returncode != 0:
                raise SystemExit(run.failure(f"{peers.NAME} build"))
            times.append(run.seconds)
        executable = out / f"bench-{env.spec.name}"
        self.results.setdefault("peer", {})[env.spec.name] = {
            "cold_build_s": times[0],
            "warm_build_s": times[1:],
            "warm_build_median_s": median(times[1:]),
            "file_bytes": executable.stat().st_size,
        }
        return executable

    def run_peer(self, env: SyntheticEnv, executable: Path, tag: str) -> float:
        """Seconds for conda-ship's executable to install ``env`` (fresh prefix and cache)."""
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-peer-{tag}")
        prefix = base / "prefix"
        drop_dirty_pages()
        run = timed_run(
            [str(executable)],
            timeout=self.timeout,
            sample_interval=None,
            env=self._peer_env(base, prefix=prefix),
        )
        if run.timed_out is not None:
            raise SystemExit(run.failure(f"{peers.NAME}'s install"))
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
    def build(self, env: SyntheticEnv, out: Path) -> tuple[float, Path]:
        cache = self.work / "build-cache" / env.spec.name
        command = [sys.executable, "-m", "lockship.builder.cli", "build", str(env.workspace)]
        command += ["-o", str(out), "--cache-dir", str(cache), "--stub", str(self.stub)]
        drop_dirty_pages()
        run = timed_run(command, timeout=self.timeout, sample_interval=None, cwd=REPO)
        last = run.last_line("out")
        if run.returncode != 0 or last is None:
            raise SystemExit(run.failure("lockship build"))
        return run.seconds, Path(last[1])  # the builder's last line: the installer's path

    def plain_copy(
        self, env: SyntheticEnv, target: Path, with_stub: bool = False
    ) -> tuple[float, float]:
        """Seconds to ``cat`` the archives (and the stub) into one file, and to fsync it."""
        target.unlink(missing_ok=True)
        sources = ([str(self.stub)] if with_stub else []) + [str(p) for p in env.archives]
        drop_dirty_pages()
        t0 = time.perf_counter()
        with open(target, "wb") as f:
            subprocess.run(["cat", *sources], stdout=f, check=True, timeout=self.timeout)
            copied = time.perf_counter() - t0
            os.fsync(f.fileno())
            synced = time.perf_counter() - t0
        target.unlink()
        return copied, synced

    def measure_build(self, env: SyntheticEnv) -> Path:
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

    def build_only(self, env: SyntheticEnv) -> Path:
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
    def run_installer(self, env: SyntheticEnv, installer: Path, tag: str) -> tuple[Run, Path]:
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-installer-{tag}")
        prefix = base / "prefix"
        drop_dirty_pages()
        run = timed_run(
            ["bash", str(installer), "-b", "-p", str(prefix)],
            timeout=self.timeout,
            sample_interval=self.interval,
            env=self.installer_env,
            events=True,
        )
        if run.returncode != 0:
            raise SystemExit(run.failure("the installer"))
        return run, prefix

    def run_bare(self, env: SyntheticEnv, tag: str) -> tuple[Run, Path, dict[str, Any]]:
        base = fresh_dir(self.runs_dir / f"{env.spec.name}-bare-{tag}")
        prefix, cache = base / "prefix", base / "cache"
        drop_dirty_pages()
        command = [sys.executable, "-c", BARE_INSTALL, str(env.channel), str(prefix), str(cache)]
        run = timed_run([*command, PLATFORM], timeout=self.timeout, sample_interval=self.interval)
        last = run.last_line("out")
        if run.returncode != 0 or last is None:
            raise SystemExit(run.failure("bare rattler install"))
        inner = json.loads(last[1])
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
                seconds, line, rest = first_stderr_line(
                    ["bash", str(installer), "-b", "-p", str(base / "prefix")],
                    timeout=self.timeout,
                    env=self.installer_env,
                )
                times[name].append(seconds)
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

    def check_prefixes(self, env: SyntheticEnv, installed: Path, bare: Path) -> dict[str, Any]:
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
        self, env: SyntheticEnv, installer: Path, *, with_bare: bool, peer: Path | None = None
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
                            "phases": phases(run),
                            "peak_rss_mb": run.peak_rss_mb,
                            "peak_anon_mb": run.peak_anon_mb,
                            "peak_pss_mb": run.peak_pss_mb,
                            "peak_processes": run.peak_processes,
                            "sampler": run.sampler,
                            "lines": run.lines,
                            "events": [asdict(e) for e in run.events],
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
    def measure_update(self, env: SyntheticEnv, installer: Path) -> dict[str, Any]:
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
            updated = timed_run(
                command, timeout=self.timeout, sample_interval=None, env=self.installer_env
            )
            if updated.returncode != 0:
                raise SystemExit(updated.failure("the update"))
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

    def measure_snapshot(self, env: SyntheticEnv, installer: Path) -> None:
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

    def _one_package_changed(self, env: SyntheticEnv) -> Path:
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
        run = timed_run(command, timeout=self.timeout, sample_interval=None, cwd=REPO)
        last = run.last_line("out")
        if run.returncode != 0 or last is None:
            raise SystemExit(run.failure("lockship build (v2)"))
        return Path(last[1])


def _snapshot_seconds(prefix: Path) -> float:
    """What taking (and discarding) the update's snapshot of ``prefix`` costs."""
    from lockship.stub.snapshot import take_snapshot

    t0 = time.perf_counter()
    take_snapshot(prefix).discard()
    return time.perf_counter() - t0


def phases(run: Run) -> dict[str, float]:
    """The phases of one installer run (its progress events and final stdout line)."""
    last = run.last_line("out")
    return phase_breakdown(run.events, last[0] if last else None, run.seconds)
