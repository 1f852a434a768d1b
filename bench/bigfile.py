"""A cold large file: time to first byte and MB/s of one download, direct from the look-alike
upstream and through each proxy with an empty cache (its page asked first, as pip does).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.servers import CACHE, Server
from bench.tree import write_wheel

PROJECT = "bigfile"


def big_tree(megabytes: int) -> tuple[Path, str]:
    """A directory holding one wheel of about ``megabytes`` MB (made once), and its name."""
    tree = CACHE / f"big-{megabytes}"
    filename = f"{PROJECT}-1.0-py3-none-any.whl"
    if not (tree / ".ready").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        write_wheel(tree, PROJECT, "1.0", payload_size=megabytes * 1024 * 1024)
        (tree / ".ready").touch()
    return tree, filename


@dataclass(frozen=True)
class Download:
    first_byte_ms: float
    mb_per_s: float


def download(url: str, size: int) -> Download:
    with httpx.Client(timeout=600) as client:
        started = time.perf_counter()
        got, first = 0, 0.0
        with client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():  # as it arrives: the first byte's time is true
                if not got:
                    first = time.perf_counter() - started
                got += len(chunk)
        seconds = time.perf_counter() - started
    if got != size:
        raise RuntimeError(f"{url}: {got} bytes, not {size}")
    return Download(first * 1000, size / seconds / 1024**2)


def measure(
    upstream: Server,
    starters: dict[str, Callable[[str, Path], Server]],
    filename: str,
    size: int,
    work: Path,
) -> dict[str, Download]:
    direct_url = f"{upstream.base}{upstream.file_prefix}/{PROJECT}/{filename}"
    results = {"direct": download(direct_url, size)}
    print(f"  direct       {_line(results['direct'])}", flush=True)
    for name, start in starters.items():
        cache = work / f"big-{name}"
        server = start(upstream.index_url, cache)
        try:
            httpx.get(f"{server.base}{server.page_prefix}{PROJECT}/", timeout=60).raise_for_status()
            results[name] = download(
                f"{server.base}{server.file_prefix}/{PROJECT}/{filename}", size
            )
        finally:
            server.stop()
            shutil.rmtree(cache, ignore_errors=True)
        print(f"  {name:<12} {_line(results[name])}", flush=True)
    return results


def _line(figure: Download) -> str:
    return f"first byte {figure.first_byte_ms:7.1f} ms  {figure.mb_per_s:7.1f} MB/s"
