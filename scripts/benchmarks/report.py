"""The targets, the evaluation of a run's results against them, and the printed table.

Pure functions of the results document (``Bench.results``), so they are tested on a
hand-made one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import MB, median
from .peer import NAME as PEER

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


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, what it is compared with, and the verdict."""

    measure: str
    lockship: str
    reference: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None  # None: information only, or not measured


def fmt(value: float | None, unit: str, digits: int = 2) -> str:
    """``value`` with ``unit``, or ``-`` when it is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f} {unit}".strip()


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def _rss(result: dict[str, Any], total: str, anon: str) -> str:
    return f"{fmt(result[total], 'MB', 0)} (anon {fmt(result[anon], 'MB', 0)})"


def _at_most(ratio: float, target: float) -> tuple[str, bool]:
    return f"<= {target:.2f}x", ratio <= target


def evaluate(results: dict[str, Any]) -> list[Row]:
    """One row per figure: absolute values, ratio, target and whether it is met."""
    build = results["build"]["main"]
    inst = results["install"]
    main, big = inst["main"], inst.get("1gb")
    stub_mb = build["stub_bytes"] / MB
    t = TARGETS
    rows = [
        Row(
            "build, warm cache (main)",
            fmt(build["warm_median_s"], "s"),
            f"cat stub + archives, fsync {fmt(median(build['plain_copy_with_stub_fsync_s']), 's')}",
            build["ratio"],
            *_at_most(build["ratio"], t["build_ratio"]),
        ),
        Row(
            "build vs cat archives (info)",
            fmt(build["warm_median_s"], "s"),
            f"cat archives, no fsync {fmt(build['plain_copy_median_s'], 's')} "
            f"(fsync {fmt(median(build['plain_copy_fsync_s']), 's')})",
            build["ratio_vs_cat_archives"],
            f"(<= {t['build_ratio']:.2f}x)",
        ),
        Row(
            "installer size (main)",
            fmt(build["installer_bytes"] / MB, "MB", 1),
            f"archives {build['archive_bytes'] / MB:.1f} + stub {build['stub_bytes'] / MB:.1f} MB",
            build["size_ratio"],
            *_at_most(build["size_ratio"], t["size_ratio"]),
        ),
        Row(
            "the stub inside a .sh installer",
            fmt(stub_mb, "MB", 1),
            target=f"<= {t['stub_mb']:.0f} MB",
            met=stub_mb <= t["stub_mb"],
        ),
        Row(
            "install (main)",
            fmt(main["installer_median_s"], "s"),
            f"bare rattler {fmt(main['bare_median_s'], 's')}",
            main["ratio"],
            *_at_most(main["ratio"], t["install_ratio"]),
        ),
    ]
    if big is not None:
        rows.append(
            Row(
                "install (1 GB, info)",
                fmt(big["installer_median_s"], "s"),
                f"bare rattler {fmt(big['bare_median_s'], 's')}",
                big["ratio"],
                f"(<= {t['install_ratio']:.2f}x)",
            )
        )
    rows += _startup_rows(results["startup"], big is not None)
    if big is not None:
        rows.append(
            Row(
                "peak RSS, tree (1 GB)",
                _rss(big, "peak_rss_median_mb", "peak_anon_median_mb"),
                "bare rattler " + _rss(big, "bare_peak_rss_median_mb", "bare_peak_anon_median_mb"),
                big["peak_rss_median_mb"] / big["bare_peak_rss_median_mb"],
                f"<= {t['peak_rss_mb']:.0f} MB",
                big["peak_rss_median_mb"] <= t["peak_rss_mb"],
            )
        )
        rows.append(
            Row(
                "peak PSS, tree (1 GB, info)",
                fmt(big["peak_pss_median_mb"], "MB", 0),
                f"bare rattler {fmt(big['bare_peak_pss_median_mb'], 'MB', 0)}",
                big["peak_pss_median_mb"] / big["bare_peak_pss_median_mb"],
                f"({t['peak_rss_mb']:.0f} MB)",
            )
        )
    rows.append(
        Row(
            "peak RSS, tree (main, info)" if big else "peak RSS, tree (main)",
            _rss(main, "peak_rss_median_mb", "peak_anon_median_mb"),
            "bare rattler " + _rss(main, "bare_peak_rss_median_mb", "bare_peak_anon_median_mb"),
            main["peak_rss_median_mb"] / main["bare_peak_rss_median_mb"],
            f"(<= {t['peak_rss_mb']:.0f} MB at 1 GB)",
        )
    )
    rows += peer_rows(results)
    if "update" in results:
        rows.append(_update_row(results))
    return rows


def _startup_rows(startup: dict[str, Any], measured_big: bool) -> list[Row]:
    medians, turns = startup["median_s"], startup["seconds"]
    small = medians["1mb"]
    target = f"<= {TARGETS['startup_s']} s, within {TARGETS['startup_spread']:.0%}"
    rows = [
        Row(
            "startup, 1 MB payload",
            f"{fmt(small, 's')} ({spread(turns['1mb'])})",
            target=f"<= {TARGETS['startup_s']} s",
            met=small <= TARGETS["startup_s"],
        )
    ]
    if not measured_big:
        return [*rows, Row("startup, 1 GB payload", "skipped", target=target)]
    big = medians["1gb"]
    ratio = big / small
    met = big <= TARGETS["startup_s"] and abs(ratio - 1) <= TARGETS["startup_spread"]
    rows.append(
        Row(
            "startup, 1 GB payload",
            f"{fmt(big, 's')} ({spread(turns['1gb'])})",
            f"1 MB payload {fmt(small, 's')}",
            ratio,
            target,
            met,
        )
    )
    return rows


def _update_row(results: dict[str, Any]) -> Row:
    update = results["update"]
    snapshot_1gb = results.get("snapshot", {}).get("1gb")
    big = f"; 1 GB env {fmt(snapshot_1gb['median_s'], 's', 3)}" if snapshot_1gb else ""
    return Row(
        f"update 1 of {update['packages']} packages (main)",
        fmt(update["update_median_s"], "s"),
        f"fresh install {fmt(update['fresh_median_s'], 's')} (snapshot "
        f"{fmt(update['snapshot_median_s'], 's', 3)}{big})",
        update["ratio"],
        f"<= {TARGETS['update_ratio']:.2f}x",
        update["ratio"] <= TARGETS["update_ratio"],
    )


def peer_rows(results: dict[str, Any]) -> list[Row]:
    """conda-ship's column: install time, file size, warm build (when it was measured)."""
    peer = results.get("peer")
    if not peer:
        return []
    rows = []
    main = results["install"]["main"]
    if "peer_s" in main:
        rows.append(
            Row(
                f"install vs {PEER} (main)",
                f"{fmt(main['installer_median_s'], 's')} ({spread(main['installer_s'])})",
                f"{PEER} {fmt(main['peer_median_s'], 's')} ({spread(main['peer_s'])})",
                main["ratio_vs_peer"],
                *_at_most(main["ratio_vs_peer"], TARGETS["peer_install_ratio"]),
            )
        )
    sizes = (("main", None), ("1mb", None), ("22mb", TARGETS["peer_size_ratio"]))
    for name, target in sizes:
        if name not in peer:
            continue
        ours = results["build"][name]["installer_bytes"]
        ratio = ours / peer[name]["file_bytes"]
        rows.append(
            Row(
                f"file vs {PEER} ({name})" + ("" if target else ", info"),
                fmt(ours / MB, "MB", 1),
                f"{PEER} {fmt(peer[name]['file_bytes'] / MB, 'MB', 1)}",
                ratio,
                f"<= {target:.2f}x" if target else "-",
                ratio <= target if target else None,
            )
        )
    if "main" in peer:
        ours = results["build"]["main"]["warm_median_s"]
        ratio = ours / peer["main"]["warm_build_median_s"]
        rows.append(
            Row(
                f"warm build vs {PEER} (main)",
                fmt(ours, "s"),
                f"{PEER} {fmt(peer['main']['warm_build_median_s'], 's')}",
                ratio,
                "< 1.00x",
                ratio < 1.0,
            )
        )
    return rows


def format_table(rows: Sequence[Row], results: dict[str, Any]) -> str:
    """The table, then each install's phases and the start-up turns, as printed."""
    headers = ["measure", "lockship", "reference", "ratio", "target", "met"]

    def cells(row: Row) -> list[str]:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "n/a" if row.met is None else ("yes" if row.met else "NO")
        return [row.measure, row.lockship, row.reference, ratio, row.target, met]

    table = [cells(r) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)) for t in table]
    out.append("")
    for name, inst in results["install"].items():
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in inst["phases_median_s"].items())
        extra = ""
        if "bare_median_s" in inst:
            extra = (
                f"; bare rattler {inst['bare_median_s']:.2f}s in total, "
                f"{inst['bare_install_only_median_s']:.2f}s inside rattler.install"
            )
        out.append(f"{name}: installer {inst['installer_median_s']:.2f}s = {phases}{extra}")
        problems = inst.get("prefix_check", {}).get("relocation_problems")
        if problems:
            out.append(f"  WARNING: {problems}")
    turns = "; ".join(
        f"{name} " + " ".join(f"{t:.2f}" for t in times)
        for name, times in results["startup"]["seconds"].items()
    )
    out.append(f"startup runs (s, to the first progress line, stopped there): {turns}")
    return "\n".join(out)
