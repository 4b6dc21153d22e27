"""The command line: ``python scripts/bench.py [options]`` (or ``python -m benchmarks`` from
``scripts/``). See the package's docstring for what is measured."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lockship.builder.testing.synthetic import ensure_env

from . import MB, log
from . import __doc__ as PACKAGE_DOC
from . import peer as peers
from .environments import env_specs
from .measure import PLATFORM, REPO, Bench
from .report import TARGETS, evaluate, format_table

#: seconds after which a timed run is stopped (and the benchmark fails), unless --timeout says
RUN_TIMEOUT = 1800.0


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
    parser = argparse.ArgumentParser(description=(PACKAGE_DOC or "").splitlines()[0])
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
        "--timeout",
        type=float,
        default=RUN_TIMEOUT,
        help="seconds after which any timed run is stopped and the benchmark fails "
        f"(default {RUN_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes generating packages (default: all CPUs)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.startup_repeat < 1 or args.scale <= 0 or args.timeout <= 0:
        parser.error("--repeat and --startup-repeat must be >= 1, --scale and --timeout > 0")
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
    envs = {
        name: ensure_env(args.work, specs[name], PLATFORM, jobs=args.jobs, on_generate=log)
        for name in names
    }
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
        "summary": [asdict(row) for row in rows],
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
    print(format_table(rows, bench.results))
    load = document["load_average"]
    print(
        f"\nload average before/after: {load['before'][0]:.2f} / {load['after'][0]:.2f} "
        f"(1-min; {os.cpu_count()} CPUs)\nresults: {json_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
