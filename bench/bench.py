"""The benchmark: pypi-proxy next to going direct, proxpi, devpi-server, nginx and bandersnatch,
all against the look-alike upstream (bench/upstream.py). Not a test: it prints figures.

Run from the checkout as `python -m bench.bench` (`make bench`); see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import bigfile, hot, installs, prefetch_bench
from bench.servers import (
    CACHE,
    Server,
    start_devpi,
    start_ours,
    start_proxpi,
    start_upstream,
    venv,
)
from bench.tree import real_tree, requirements

COLUMNS = ("pypi-proxy", "direct", "proxpi", "devpi", "nginx", "bandersnatch")


def starters(
    args: argparse.Namespace, names: list[str]
) -> dict[str, Callable[[str, Path], Server]]:
    known: dict[str, Callable[[str, Path], Server]] = {
        "pypi-proxy": partial(_ours, workers=args.workers),
        "proxpi": partial(_proxpi, workers=args.proxpi_workers, threads=args.proxpi_threads),
        "devpi": start_devpi,
    }
    return {name: known[name] for name in names if name not in args.skip}


def _ours(upstream: str, cache: Path, workers: int | None) -> Server:
    return start_ours(upstream, cache, workers)


def _proxpi(upstream: str, cache: Path, workers: int, threads: int) -> Server:
    return start_proxpi(upstream, cache, workers, threads)


# A row: case, unit, whether more is better, {column: value}.
Row = tuple[str, str, bool, dict[str, float]]


def install_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    tree = real_tree()
    wanted = requirements()
    expected = len(list(tree.glob("*.whl")))
    rows: list[Row] = []
    rss: dict[str, float] = {}
    variants = [True] if args.quick else [True, False]
    for metadata in variants:
        label = "metadata" if metadata else "no metadata"
        print(f"installs of the tree ({expected} wheels), upstream with {label}:", flush=True)
        upstream = start_upstream(tree, args.latency_ms, args.bandwidth_mbit, metadata)
        try:
            figures = installs.measure(
                upstream,
                starters(args, ["pypi-proxy", "proxpi", "devpi"]),
                wanted,
                expected,
                work / f"installs-{int(metadata)}",
                warm_runs=args.warm_runs,
            )
        finally:
            upstream.stop()
        for client in installs.CLIENTS:
            for state in ("cold", "warm"):
                values = {
                    target: seconds
                    for (target, c, s), seconds in figures.seconds.items()
                    if c == client and s == state
                }
                case = f"{client} {state}, {label}"
                rows.append((case, "s", False, values))
        for name, mb in figures.rss_mb.items():
            rss[name] = max(rss.get(name, 0.0), mb)
    rows.append(("RSS after installs", "MB", False, rss))
    return rows


def hot_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    tree, files = hot.hot_tree()
    print("hot figures (wrk):", flush=True)
    upstream = start_upstream(tree, args.latency_ms, args.bandwidth_mbit)
    try:
        results, rss = hot.measure(
            upstream,
            starters(args, ["pypi-proxy", "proxpi"]),
            files,
            work / "hot",
            args.duration,
            args.connections,
            args.nginx_workers,
        )
    finally:
        upstream.stop()
    rows: list[Row] = []
    for label, _project, accept in hot.CASES:
        by_server = results.get(label, {})
        if accept:
            rows.append((label, "req/s", True, {n: f.rps for n, f in by_server.items()}))
        else:
            rows.append((label, "MB/s", True, {n: f.mb_per_s for n, f in by_server.items()}))
        rows.append((f"{label} p50", "ms", False, {n: f.p50_ms for n, f in by_server.items()}))
        rows.append((f"{label} p99", "ms", False, {n: f.p99_ms for n, f in by_server.items()}))
    rows.append(("RSS after hot load", "MB", False, rss))
    return rows


def big_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    tree, filename = bigfile.big_tree(args.big_mb)
    size = (tree / filename).stat().st_size
    print(f"a cold {size / 1024**2:.0f} MB file, {args.big_bandwidth_mbit:g} Mbit/s:", flush=True)
    upstream = start_upstream(tree, args.latency_ms, args.big_bandwidth_mbit)
    try:
        results = bigfile.measure(
            upstream, starters(args, ["pypi-proxy", "proxpi"]), filename, size, work
        )
    finally:
        upstream.stop()
    label = f"cold {args.big_mb} MB file"  # at --big-bandwidth-mbit
    return [
        (label, "MB/s", True, {n: d.mb_per_s for n, d in results.items()}),
        (f"{label} first byte", "ms", False, {n: d.first_byte_ms for n, d in results.items()}),
    ]


def prefetch_rows(args: argparse.Namespace) -> list[Row]:
    print(
        f"prefetch: {args.prefetch_projects} projects, then {args.prefetch_changed} changed",
        flush=True,
    )
    figures = prefetch_bench.pass_figures(
        args.prefetch_projects,
        args.prefetch_changed,
        None,
        args.latency_ms,
        args.bandwidth_mbit,
        with_bandersnatch="bandersnatch" not in args.skip,
    )
    print("  " + json.dumps(figures), flush=True)
    rows: list[Row] = []
    for label in ("full", "incremental"):
        values = {"pypi-proxy": figures[f"{label}_seconds"]}
        if f"bandersnatch_{label}_seconds" in figures:
            values["bandersnatch"] = figures[f"bandersnatch_{label}_seconds"]
        rows.append((f"prefetch {label} pass", "s", False, values))
    return rows


def table(rows: list[Row]) -> str:
    """One table: each server's figure, then pypi-proxy's divided by each other's."""
    present = [c for c in COLUMNS if any(c in values for _, _, _, values in rows)]
    others = [c for c in present if c != "pypi-proxy"]
    head = f"{'case':<26}{'unit':>6}" + "".join(f"{c[:10]:>11}" for c in present)
    head += "".join(f"{'÷' + c[:7]:>9}" for c in others)
    lines = [head, "-" * len(head)]
    for case, unit, _more_is_better, values in rows:
        cells = "".join(
            f"{values[c]:>11.{_digits(values[c])}f}" if c in values else f"{'-':>11}"
            for c in present
        )
        ours = values.get("pypi-proxy")
        ratios = "".join(
            f"{ours / values[c]:>8.2f}x" if ours is not None and values.get(c) else f"{'-':>9}"
            for c in others
        )
        lines.append(f"{case:<26}{unit:>6}{cells}{ratios}")
    lines.append(
        "ratios are pypi-proxy's figure over the column's: below 1 is better for s, ms and MB "
        "of RSS, above 1 for req/s and MB/s"
    )
    return "\n".join(lines)


def _digits(value: float) -> int:
    return 0 if value >= 100 else 2


def chart(rows: list[Row], path: Path, title: str) -> None:
    """Bars of pypi-proxy's ratio to each other server, one group per case (log scale)."""
    bin_dir = venv("chart", ["matplotlib"])
    data = [
        [case, unit, more, values]
        for case, unit, more, values in rows
        if "pypi-proxy" in values and len(values) > 1
    ]
    script = """
import json, sys, textwrap
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.patches
import matplotlib.ticker
rows, out, columns, title = json.loads(sys.stdin.read())
others = [c for c in columns if c != "pypi-proxy" and any(c in r[3] for r in rows)]
colours = dict(zip(others, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.8))
for j, (case, unit, more, values) in enumerate(rows):
    present = [o for o in others if values.get(o)]
    height = 0.8 / len(present)
    for k, other in enumerate(present):
        ratio = values["pypi-proxy"] / values[other]
        better = ratio if more else 1 / ratio  # above 1: pypi-proxy does better
        # From the 1x line to the ratio, so a bar's side says better or worse.
        y = j - 0.4 + height * (k + 0.5)
        ax.barh(y, better - 1, left=1, height=height, color=colours[other])
handles = [matplotlib.patches.Patch(color=colours[o], label=f"vs {o}") for o in others]
ax.set_yticks(range(len(rows)))
ax.set_yticklabels([f"{r[0]} ({r[1]})" for r in rows], fontsize=8)
ax.invert_yaxis()
ax.set_xscale("log")
ax.axvline(1, color="black", linewidth=0.8)
ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
ax.set_title(textwrap.fill(title, 120), fontsize=9)
ax.set_xlabel("how many times better pypi-proxy does (right of 1: better, left: worse)")
ax.legend(handles=handles, fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=110)
"""
    subprocess.run(
        [str(bin_dir / "python"), "-c", script],
        input=json.dumps([data, str(path), COLUMNS, title]),
        text=True,
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run of a few minutes")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="upstream, per request")
    parser.add_argument("--bandwidth-mbit", type=float, default=200.0, help="upstream link cap")
    parser.add_argument("--warm-runs", type=int, help="warm installs per server (best kept)")
    parser.add_argument("--duration", type=int, help="seconds per wrk measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, help="pypi-proxy's workers (default: serve's)")
    parser.add_argument("--proxpi-workers", type=int, default=2)
    parser.add_argument("--proxpi-threads", type=int, default=4)
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--big-mb", type=int, help="the cold large file's size (512; quick: 64)")
    parser.add_argument(
        "--big-bandwidth-mbit",
        type=float,
        default=1000.0,
        help="the upstream link for the large file (a fast one: the proxy's own rate shows)",
    )
    parser.add_argument("--prefetch-projects", type=int)
    parser.add_argument("--prefetch-changed", type=int, default=20)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated: installs, hot, big, prefetch, proxpi, devpi, bandersnatch",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--chart", type=Path, default=CACHE / "bench.png", help="PNG chart")
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: the table and chart of a --json file"
    )
    args = parser.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    args.warm_runs = args.warm_runs or (1 if args.quick else 2)
    args.duration = args.duration or (2 if args.quick else 5)
    args.prefetch_projects = args.prefetch_projects or (200 if args.quick else 1000)
    args.big_mb = args.big_mb or (64 if args.quick else 512)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        kept = [(r["case"], r["unit"], r["more_is_better"], r["values"]) for r in saved["rows"]]
        print(f"{saved['settings']}\n{table(kept)}")
        chart(kept, args.chart, saved["settings"])
        print(f"chart: {args.chart}")
        return 0
    if "hot" not in args.skip and shutil.which("wrk") is None:
        print("the hot figures need wrk: apt-get install wrk (or --skip hot)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pypi-proxy-bench-"))
    rows: list[Row] = []
    sections: dict[str, Callable[[], list[Row]]] = {
        "installs": lambda: install_rows(args, work),
        "hot": lambda: hot_rows(args, work),
        "big": lambda: big_rows(args, work),
        "prefetch": lambda: prefetch_rows(args),
    }
    failed = []
    try:
        for name, section in sections.items():
            if name in args.skip:
                continue
            # A failed section fails the run, but the others' figures are still printed.
            try:
                rows += section()
            except Exception:
                traceback.print_exc()
                failed.append(name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = (
        f"upstream: {args.latency_ms:g} ms per request, {args.bandwidth_mbit:g} Mbit/s "
        f"({args.big_bandwidth_mbit:g} for the large file); "
        f"pypi-proxy workers: {args.workers or 'its default'}; proxpi: gunicorn "
        f"{args.proxpi_workers} workers x {args.proxpi_threads} threads; wrk "
        f"{args.duration} s, {args.connections} connections (4 for files)"
    )
    print(f"\n{settings}\n{table(rows)}")
    if args.json:
        serial: list[dict[str, Any]] = [
            {"case": c, "unit": u, "more_is_better": m, "values": v} for c, u, m, v in rows
        ]
        args.json.write_text(json.dumps({"settings": settings, "rows": serial}, indent=2))
    if rows:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        chart(rows, args.chart, settings)
        print(f"chart: {args.chart}")
    if failed:
        print(f"FAILED: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
