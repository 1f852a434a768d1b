"""Prefetch figures (not a test; prints figures). Run as `python -m bench.prefetch_bench`.

1. A full pass over N small projects (one wheel and its metadata each) from the look-alike
   upstream (bench/upstream.py, with its latency and bandwidth cap), then an incremental pass
   after C of them had a new release: seconds and peak RSS of `pypi-proxy prefetch`, and of
   bandersnatch 8 (from PyPI, in a Python 3.12+ venv under .cache/) against the same upstream
   in the same run, and the ratio (ours / bandersnatch's: below 1 is faster).
2. Change detection against a synthetic JSON root index of M projects (XML-RPC refused, so
   the streamed root is diffed): seconds and peak RSS, first pass and incremental.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.servers import ROOT, Server, clean_env, rescan, start_upstream
from bench.tree import write_wheel
from tests.support.fake_upstream import FakeUpstream

DETECT = """
import anyio, json, resource, sys, time
from pathlib import Path
from prefetch.changes import by_json_root
from prefetch.state import PrefetchState
from proxy.settings import load_settings
from proxy.httpclient import make_http_client
from proxy.upstream import Upstream

async def main():
    settings = load_settings(None, {}, {"upstream": sys.argv[1]})
    http = make_http_client(settings)
    state = PrefetchState(Path(sys.argv[2]))
    started = time.perf_counter()
    detection = await by_json_root(Upstream(http, settings.upstream), state, None)
    seconds = time.perf_counter() - started
    await http.aclose()
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print(json.dumps({"seconds": seconds, "queued": detection.queued, "rss_mb": int(hwm) / 1024}))

anyio.run(main)
"""


def run_capture(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, stdout=out, stderr=errors, text=True, cwd=ROOT, env=env or clean_env()
        )
        # ru_maxrss of a child counts the parent's memory it was forked from; the child's own
        # high-water mark (VmHWM) is read from /proc while it runs.
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.05)
        status, usage = proc.returncode, None
        seconds = time.perf_counter() - started
        del status, usage
        errors.seek(0)
        err = errors.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{args[:4]} failed: {err[-2000:]}")
        out.seek(0)
        return seconds, peak_kb / 1024, out.read()


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _bandersnatch_python() -> Path:
    # The tests' installer: one venv for the tests and the benchmark (under .cache/).
    from tests.support import bandersnatch

    return bandersnatch.bandersnatch_python()


def _bandersnatch_config(path: Path, master: str, directory: Path, workers: int) -> Path:
    from tests.support import bandersnatch

    return bandersnatch.write_config(path, master, directory, workers=workers)


def pass_figures(
    projects: int,
    changed: int,
    workers: int | None,
    latency_ms: float,
    bandwidth_mbit: float,
    bandersnatch_workers: int = 10,
    with_bandersnatch: bool = True,
) -> dict[str, float]:
    """A full pass over ``projects`` small projects (one wheel and its metadata each) from the
    look-alike upstream, then an incremental one after ``changed`` of them had a new release:
    `pypi-proxy prefetch` and, against the same upstream in the same run, bandersnatch."""
    work = Path(tempfile.mkdtemp(prefix="prefetch-bench-"))
    tree = work / "tree"
    tree.mkdir()
    for i in range(projects):
        write_wheel(tree, f"proj{i}", "1.0", mtime=1_700_000_000 + i)
    upstream = start_upstream(tree, latency_ms, bandwidth_mbit)
    try:
        ours = [sys.executable, "-m", "proxy", "prefetch", "--upstream", upstream.index_url]
        ours += ["--cache-dir", str(work / "cache")]
        env = clean_env(
            **({} if workers is None else {"PYPI_PROXY_PREFETCH__WORKERS": str(workers)})
        )
        theirs: list[str] = []
        if with_bandersnatch:
            python = _bandersnatch_python()
            config = _bandersnatch_config(
                work / "bandersnatch.conf", upstream.base, work / "mirror", bandersnatch_workers
            )
            theirs = [str(python), "-m", "bandersnatch", "--config", str(config), "mirror"]
        figures: dict[str, float] = {"projects": projects, "incremental_changed": changed}
        for label in ("full", "incremental"):
            if label == "incremental":
                step = max(1, projects // changed)
                for i in list(range(0, projects, step))[:changed]:
                    write_wheel(tree, f"proj{i}", "2.0")
                rescan(upstream)
            seconds, rss, _ = run_capture(ours, env)
            # Both must have stored every wheel, or the seconds compare different work.
            wheels = projects + (changed if label == "incremental" else 0)
            _expect_wheels(work / "cache", wheels, "pypi-proxy prefetch")
            figures[f"{label}_seconds"] = round(seconds, 2)
            figures[f"{label}_peak_rss_mb"] = round(rss, 1)
            if theirs:
                seconds, rss, _ = run_capture(theirs)
                _expect_wheels(work / "mirror" / "web", wheels, "bandersnatch")
                status = int((work / "mirror" / "status").read_text())
                if status != upstream_serial(upstream):
                    raise RuntimeError(f"bandersnatch stopped at serial {status}")
                figures[f"bandersnatch_{label}_seconds"] = round(seconds, 2)
                figures[f"bandersnatch_{label}_peak_rss_mb"] = round(rss, 1)
                figures[f"{label}_ratio"] = round(
                    figures[f"{label}_seconds"] / figures[f"bandersnatch_{label}_seconds"], 2
                )
        figures["full_projects_per_s"] = round(projects / figures["full_seconds"], 1)
        figures["full_files_per_s"] = round(2 * projects / figures["full_seconds"], 1)
        return figures
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


def _expect_wheels(directory: Path, count: int, who: str) -> None:
    found = sum(1 for _ in directory.rglob("*.whl"))
    if found != count:
        raise RuntimeError(f"{who} stored {found} wheels under {directory}, not {count}")


def upstream_serial(upstream: Server) -> int:
    return int(httpx.get(upstream.index_url).headers["X-PyPI-Last-Serial"])


def detection_figures(projects: int) -> dict[str, float]:
    fake = FakeUpstream().start()
    fake.xmlrpc_refuse = True
    work = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    try:
        rows = [{"name": f"project-{i}", "_last-serial": 1000 + i} for i in range(projects)]
        fake.root_json_override = json.dumps(
            {"meta": {"api-version": "1.1", "_last-serial": 1000 + projects}, "projects": rows}
        ).encode()
        size_mb = len(fake.root_json_override) / 1024**2
        del rows
        command = [sys.executable, "-c", DETECT, fake.simple_url, str(work / "state.sqlite")]
        _, _, out = run_capture(command)
        first = json.loads(out)
        # Incremental: 1% of the projects moved on.
        data = json.loads(fake.root_json_override)
        for item in data["projects"][::100]:
            item["_last-serial"] += projects
        fake.root_json_override = json.dumps(data).encode()
        del data
        # Mark the first pass's queue as synced, as a finished pass would.
        import sqlite3

        db = sqlite3.connect(work / "state.sqlite")
        db.execute("INSERT OR REPLACE INTO projects SELECT name, serial FROM queue")
        db.execute("DELETE FROM queue")
        db.commit()
        db.close()
        _, _, out = run_capture(command)
        second = json.loads(out)
        return {
            "root_projects": projects,
            "root_mb": round(size_mb, 1),
            "first_seconds": round(first["seconds"], 2),
            "first_queued": first["queued"],
            "first_peak_rss_mb": round(first["rss_mb"], 1),
            "incremental_seconds": round(second["seconds"], 2),
            "incremental_queued": second["queued"],
            "incremental_peak_rss_mb": round(second["rss_mb"], 1),
        }
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=20, help="projects changed before pass 2")
    parser.add_argument("--root-projects", type=int, default=700_000, help="0: skip part 2")
    parser.add_argument("--workers", type=int, help="prefetch workers (default: its own)")
    parser.add_argument("--bandersnatch-workers", type=int, default=10)
    parser.add_argument("--no-bandersnatch", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--bandwidth-mbit", type=float, default=200.0)
    args = parser.parse_args()
    figures: dict[str, object] = {
        "pass": pass_figures(
            args.projects,
            args.changed,
            args.workers,
            args.latency_ms,
            args.bandwidth_mbit,
            args.bandersnatch_workers,
            not args.no_bandersnatch,
        ),
    }
    if args.root_projects:
        figures["detection"] = detection_figures(args.root_projects)
    figures["bench_process_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
