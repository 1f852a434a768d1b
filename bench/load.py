"""Load and soak: C concurrent clients mixing hits and misses against the real server and the
local fake upstream, for a bounded time and request count. Loopback only; stops by itself.

Reports requests, errors, p50/p99/max latency, requests/s, and the server's memory (RSS of the
server and its workers) at the start, peak and end, so a leak shows as growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.servers import ROOT, start_ours
from tests.support.fake_upstream import FakeUpstream
from tests.support.wheels import make_wheel

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1"


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (uvicorn workers)."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in children.stdout.split()]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmRSS"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Connection:
    """One keep-alive HTTP/1.1 connection: a load generator must cost far less than the
    server it drives (httpx's pool, at 200 connections, was the bottleneck)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: dict[str, str]) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        }
        if b"content-length" in fields:
            await self.reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if fields.get(b"connection") == b"close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def client_loop(
    base: str,
    files: list[tuple[str, str]],
    hot: list[tuple[str, str]],
    deadline: float,
    budget: list[int],
    latencies: list[float],
    errors: list[str],
    rng: random.Random,
    miss_ratio: float,
) -> None:
    host, port = base.removeprefix("http://").split(":")
    connection = Connection(host, int(port))
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        if rng.random() >= miss_ratio:  # hits: the hot set, pages and files
            project, filename = rng.choice(hot)
            if rng.random() < 0.45:
                path, headers = f"/simple/{project}/", {"accept": PIP_ACCEPT}
            else:
                path, headers = f"/files/{project}/{filename}", {}
        else:  # mostly misses: the whole population, most never fetched yet
            project, filename = rng.choice(files)
            path = f"/files/{project}/{filename}" if rng.random() < 0.8 else f"/simple/{project}/"
            headers = {"accept": PIP_ACCEPT}
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(connection.get(path, headers), 60)
            if status not in (200, 304):
                errors.append(f"{status} {path}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(f"{type(exc).__name__} {path}")
            await connection.close()
        latencies.append(time.perf_counter() - started)
    await connection.close()


async def drive(
    miss_ratio: float,
    base: str,
    clients: int,
    seconds: float,
    max_requests: int,
    files: list[tuple[str, str]],
    hot: list[tuple[str, str]],
    pid: int,
) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [max_requests]
    rss: list[int] = []

    async def sample() -> None:
        while True:
            rss.append(tree_rss_kb(pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    deadline = started + seconds
    rng = random.Random(7)
    await asyncio.gather(
        *(
            client_loop(
                base,
                files,
                hot,
                deadline,
                budget,
                latencies,
                errors,
                random.Random(rng.random()),
                miss_ratio,
            )
            for _ in range(clients)
        )
    )
    elapsed = time.monotonic() - started
    sampler.cancel()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
        "rss_mb_start": round(rss[0] / 1024, 1) if rss else None,
        "rss_mb_peak": round(max(rss) / 1024, 1) if rss else None,
        "rss_mb_end": round(rss[-1] / 1024, 1) if rss else None,
    }


def serve_fake(projects: int, versions: int) -> None:
    fake = FakeUpstream().start()
    for p in range(projects):
        for v in range(versions):
            fake.add_dist(f"load{p}", make_wheel(f"load{p}", f"1.{v}", payload_size=20_000))
    print(fake.simple_url, flush=True)
    signal.sigwait({signal.SIGTERM})
    fake.stop()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-fake":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        serve_fake(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--miss-ratio", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=1, help="repeat against one server")
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()
    # The fake upstream runs in a process of its own: sharing this one's GIL with 200 clients
    # would make it, not the proxy, the thing measured.
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--serve-fake",
            str(args.projects),
            str(args.versions),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert fake.stdout is not None
    simple_url = fake.stdout.readline().strip()
    files = [
        (f"load{p}", f"load{p}-1.{v}-py3-none-any.whl")
        for p in range(args.projects)
        for v in range(args.versions)
    ]
    hot = files[:: args.versions][:50]
    work = Path(tempfile.mkdtemp(prefix="pypi-proxy-load-"))
    server = start_ours(simple_url, work / "cache", args.workers, "--index-ttl", "5")
    base = server.base
    try:
        for project, filename in hot:  # warm the hot set
            httpx.get(f"{base}/files/{project}/{filename}", timeout=30)
        reports = [
            asyncio.run(
                drive(
                    args.miss_ratio,
                    base,
                    args.clients,
                    args.seconds,
                    args.max_requests,
                    files,
                    hot,
                    server.proc.pid,
                )
            )
            for _ in range(args.rounds)
        ]
        report = reports[-1]
        # Earlier rounds against the same server show whether memory keeps growing.
        rounds = [
            {k: r[k] for k in ("requests", "errors", "p99_ms", "rss_mb_start", "rss_mb_end")}
            for r in reports[:-1]
        ]
        report["workers"] = args.workers
        report["earlier_rounds"] = rounds
        stats = httpx.get(base + "/stats", timeout=30).json()
        report["server"] = {
            k: stats[k]
            for k in ("hits", "misses", "hit_ratio", "upstream_errors", "integrity_errors")
        }
        report["alive_after"] = httpx.get(base + "/health", timeout=5).status_code == 200
    finally:
        server.stop()
        fake.terminate()
        fake.wait()
    print(json.dumps(report, indent=2))
    failed = report["errors"] or any(r["errors"] for r in rounds)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
