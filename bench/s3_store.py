"""The S3 file store next to the local one, on loopback: put, stat and a full stream of a file.

Not a test: it prints figures. The S3 API server is moto's (``moto[server]``, a test extra),
run in its own process so it does not share this one's interpreter. moto keeps objects in
memory and is written in Python: its figures are a floor for the store's own overhead, not a
forecast of AWS S3, MinIO or RGW.

    .venv/bin/python -m bench.s3_store [--sizes 1,100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx

from proxy.filestore import FileStore, StoredFile
from proxy.localstore import LocalFileStore
from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from proxy.tiered import TieredFileStore, wait_uploaded

MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.put(f"{endpoint}/bench-bucket", timeout=2).raise_for_status()
            return server, endpoint
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto's server did not come up")


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def stream_all(store: FileStore, stored: StoredFile) -> int:
    async def run() -> int:
        n = 0
        async for chunk in store.stream(stored, 0, stored.size):
            n += len(chunk)
        return n

    return anyio.run(run)


def measure(store: FileStore, source: Path, sha: str, rounds: int) -> dict[str, float]:
    name = f"bench-{source.stat().st_size // MB}mb.whl"
    puts, stats, streams = [], [], []
    for _ in range(rounds):
        store.remove(sha, name)
        copy = source.with_name(source.name + ".copy")
        shutil.copyfile(source, copy)  # the local store moves its source: give it a copy
        puts.append(timed(functools.partial(store.put, copy, sha, name)))
        copy.unlink(missing_ok=True)
        stats.append(timed(functools.partial(store.stat, sha, name)))
        stored = store.stat(sha, name)
        assert stored is not None
        streams.append(timed(functools.partial(stream_all, store, stored)))
    size = source.stat().st_size
    return {
        "put_s": statistics.median(puts),
        "stat_ms": statistics.median(stats) * 1000,
        "stream_s": statistics.median(streams),
        "stream_MBps": size / MB / statistics.median(streams),
    }


def tier(work: Path, name: str, config: S3Config) -> TieredFileStore:
    (work / name / "tmp").mkdir(parents=True, exist_ok=True)
    return TieredFileStore(
        LocalFileStore(work / name / "files"),
        S3FileStore(config),
        work_dir=work / name / "tmp",
        queue_dir=work / name / "uploads",
    )


def measure_tier(
    work: Path, config: S3Config, source: Path, sha: str, rounds: int
) -> dict[str, float]:
    """The tiered store as replicas use it: a fill (local, then the upload), a hot hit (stat
    and stream of the local copy), and a second replica's first hit: HEAD, verified copy-in,
    stream of its new local copy (as for HEAD and Range), and sent while copied in (a GET),
    with the time to its first byte."""
    name = f"bench-{source.stat().st_size // MB}mb.whl"
    fills, hots, firsts, streamed, first_bytes = [], [], [], [], []
    for i in range(rounds):
        a, b = tier(work, f"a{i}", config), tier(work, f"b{i}", config)
        c = tier(work, f"c{i}", config)
        a.bucket.remove(sha, name)
        copy = source.with_name(source.name + ".copy")
        shutil.copyfile(source, copy)

        def fill(a: TieredFileStore = a, copy: Path = copy) -> None:
            a.put(copy, sha, name)
            assert wait_uploaded(a)

        fills.append(timed(fill))

        def hot(a: TieredFileStore = a) -> None:
            stored = a.stat(sha, name)
            assert stored is not None and stored.path is not None
            stream_all(a, stored)

        hots.append(timed(hot))

        def first(b: TieredFileStore = b) -> None:
            remote = b.stat(sha, name)
            assert remote is not None
            stored = b.local_copy(remote)
            assert stored is not None
            stream_all(b, stored)

        firsts.append(timed(first))

        def stream_first(c: TieredFileStore = c, i: int = i) -> None:
            remote = c.stat(sha, name)
            assert remote is not None
            started = time.perf_counter()

            async def run() -> None:
                async for _ in c.stream_in(remote):
                    if len(first_bytes) <= i:
                        first_bytes.append(time.perf_counter() - started)

            anyio.run(run)

        streamed.append(timed(stream_first))
    return {
        "fill_s": statistics.median(fills),
        "hot_s": statistics.median(hots),
        "replica2_first_s": statistics.median(firsts),
        "replica2_streamed_s": statistics.median(streamed),
        "replica2_first_byte_s": statistics.median(first_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100", help="file sizes in MB, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    try:
        config = S3Config("bench-bucket", "mirror", endpoint, "us-east-1", "AKIDBENCH", "bench")
        stores: dict[str, FileStore] = {
            "local": LocalFileStore(work / "files"),
            "s3": S3FileStore(config),
        }
        for mb in (int(x) for x in args.sizes.split(",")):
            source = work / f"src-{mb}"
            digest = hashlib.sha256()
            with source.open("wb") as f:
                for _ in range(mb):
                    block = os.urandom(MB)
                    digest.update(block)
                    f.write(block)
            sha = digest.hexdigest()
            for label, store in stores.items():
                figures = measure(store, source, sha, args.rounds)
                shown = "  ".join(f"{k} {v:9.3f}" for k, v in figures.items())
                print(f"{mb:4d} MB {label:6s} {shown}", flush=True)
            figures = measure_tier(work, config, source, sha, args.rounds)
            shown = "  ".join(f"{k} {v:9.3f}" for k, v in figures.items())
            print(f"{mb:4d} MB {'s3-tier':6s} {shown}", flush=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {peak:.0f} MB (moto runs in its own)")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
