"""Prefetch figures against the local fake upstream (not a test; prints figures).

1. A full pass over N small projects (one wheel and its metadata each), then an incremental
   pass after 1% of them changed: projects/s, files/s, peak RSS of the `pypi-proxy prefetch`
   process.
2. Change detection against a synthetic JSON root index of M projects (XML-RPC refused, so
   the streamed root is diffed): seconds and peak RSS, first pass and incremental.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.wheels import make_wheel  # noqa: E402

DETECT = """
import anyio, json, resource, sys, time
from pathlib import Path
from prefetch.changes import by_json_root
from prefetch.state import PrefetchState
from proxy.settings import load_settings
from proxy.upstream import Upstream, make_http_client

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


def run_capture(args: list[str]) -> tuple[float, float, str]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=errors, text=True, cwd=ROOT)
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


def pass_figures(projects: int, workers: int) -> dict[str, float]:
    fake = FakeUpstream().start()
    work = Path(tempfile.mkdtemp(prefix="prefetch-bench-"))
    try:
        for i in range(projects):
            fake.add_dist(f"proj{i}", make_wheel(f"proj{i}", "1.0"))
        command = [
            sys.executable,
            "-m",
            "proxy",
            "prefetch",
            "--upstream",
            fake.simple_url,
            "--cache-dir",
            str(work / "cache"),
        ]
        env_workers = {"PYPI_PROXY_PREFETCH__WORKERS": str(workers)}
        os.environ.update(env_workers)
        full_s, full_rss, _ = run_capture(command)
        for i in range(0, projects, 100):
            fake.add_dist(f"proj{i}", make_wheel(f"proj{i}", "2.0"))
        incr_s, incr_rss, _ = run_capture(command)
        changed = len(range(0, projects, 100))
        return {
            "projects": projects,
            "full_seconds": round(full_s, 2),
            "full_projects_per_s": round(projects / full_s, 1),
            "full_files_per_s": round(2 * projects / full_s, 1),
            "full_peak_rss_mb": round(full_rss, 1),
            "incremental_changed": changed,
            "incremental_seconds": round(incr_s, 2),
            "incremental_projects_per_s": round(changed / incr_s, 1),
            "incremental_peak_rss_mb": round(incr_rss, 1),
        }
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)


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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=3000)
    parser.add_argument("--root-projects", type=int, default=700_000)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    figures = {
        "pass": pass_figures(args.projects, args.workers),
        "detection": detection_figures(args.root_projects),
        "bench_process_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
