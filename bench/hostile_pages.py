"""What one hostile upstream page costs the proxy: peak RSS, time and status for a huge JSON
page, a gzip bomb and a trickled page, each against a fresh `pypi-proxy serve` subprocess and
the local fake upstream. Loopback only; every step is bounded in time.

    python -m bench.hostile_pages [--tree DIR] [--only json150,bomb,trickle] [-- serve flags]

``--tree`` runs the proxy from another checkout (to measure an older commit the same way).
Not a test: it prints one JSON line per attack.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx

from bench.servers import ROOT, free_port
from tests.support.fake_upstream import FakeUpstream, RawAnswer

JSON = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
PAGE = "/simple/demo/"


def json_page(size: int) -> bytes:
    """A project page of about ``size`` bytes, with as many (long) file entries as fit."""
    entry = {
        "filename": "demo-1.0-py3-none-any.whl",
        "url": "https://files.example.invalid/" + "p" * 1200 + "/demo-1.0-py3-none-any.whl",
        "hashes": {"sha256": "0" * 64},
    }
    one = json.dumps(entry)
    count = size // (len(one) + 2)
    files = ",".join(one.replace("demo-1.0-py3", f"demo-1.{i}-py3", 2) for i in range(count))
    return ('{"meta": {"api-version": "1.1"}, "name": "demo", "files": [' + files + "]}").encode()


def gzip_bomb(inflated: int) -> bytes:
    """A valid gzip stream of a JSON page padded with ``inflated`` bytes of spaces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(b'{"meta": {"api-version": "1.1"}, "name": "demo", "files": []')]
    block = b" " * 1024**2
    for _ in range(inflated // len(block)):
        out.append(compressor.compress(block))
    out.append(compressor.compress(b"}"))
    out.append(compressor.flush())
    return b"".join(out)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(attack: str, answer: RawAnswer, tree: Path, extra: list[str], timeout: float) -> dict:
    with FakeUpstream() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.raw_routes[PAGE] = answer
        cache = Path(tmp) / "cache"
        port = free_port()
        argv = [
            sys.executable, "-m", "proxy", "serve", "--port", str(port),
            "--cache-dir", str(cache), "--upstream", fake.simple_url, *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}
        env["PYTHONPATH"] = str(tree)
        env["PYPI_PROXY_READ_TIMEOUT"] = "5"  # as in the issue
        env["PYPI_PROXY_RETRIES"] = "0"
        log = open(Path(tmp) / "log", "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            base_kb = status_kb(proc.pid, "VmRSS")
            started = time.monotonic()
            try:
                status: int | str = httpx.get(url + PAGE, timeout=timeout).status_code
            except httpx.TimeoutException:
                status = f"no answer in {timeout:g}s"
            elapsed = time.monotonic() - started
            time.sleep(1)
            after = {
                "attack": attack,
                "status": status,
                "seconds": round(elapsed, 1),
                "rss_start_mb": round(base_kb / 1024),
                "rss_peak_mb": round(status_kb(proc.pid, "VmHWM") / 1024),
                "rss_after_mb": round(status_kb(proc.pid, "VmRSS") / 1024),
                "index_mb": round(tree_bytes(cache / "index") / 1024**2, 1),
                "upstream_bytes": len(answer.body),
                "server_alive": proc.poll() is None,
            }
            return after
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--only", default="json150,json150-no-length,bomb,trickle")
    parser.add_argument("--timeout", type=float, default=100.0)
    parser.add_argument("extra", nargs="*", help="more `serve` flags, after --")
    args = parser.parse_args()
    gzipped = {**JSON, "Content-Encoding": "gzip"}
    makers = {
        "json150": lambda: RawAnswer(200, JSON, json_page(150 * 1024**2)),
        "json150-no-length": lambda: RawAnswer(200, JSON, json_page(150 * 1024**2), length=False),
        "bomb": lambda: RawAnswer(200, gzipped, gzip_bomb(400 * 1024**2)),
        "trickle": lambda: RawAnswer(200, JSON, b'{"name":"demo","files":[]}', chunk=1, pace=2.0),
    }  # fmt: skip
    for attack in args.only.split(","):
        result: dict = {}

        def measure(attack: str = attack, result: dict = result) -> None:
            result.update(
                run(attack, makers[attack](), args.tree.resolve(), args.extra, args.timeout)
            )

        worker = threading.Thread(target=measure)
        worker.start()
        worker.join(args.timeout + 120)
        print(json.dumps(result or {"attack": attack, "error": "did not finish"}), flush=True)


if __name__ == "__main__":
    main()
