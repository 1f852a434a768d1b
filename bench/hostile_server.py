"""Hostile clients against a real ``pypi-proxy serve``: what each attack costs the server.

Not a test: it prints a table (seconds, RSS, CPU, statuses). Run it against any checkout with
``--tree DIR`` (the server is started from that tree; the fake upstream comes from this one),
so the same attacks measure the code before and after a change. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.servers import ROOT, free_port
from tests.support.fake_upstream import FakeUpstream
from tests.support.wheels import make_wheel


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Peak RSS of the server while an attack runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def status_of(url: str, timeout: float = 5) -> str:
    try:
        return str(httpx.get(url, timeout=timeout).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def open_until_closed(sock: socket.socket, limit: float, trickle: bytes | None) -> float | None:
    """Seconds until the server closed the socket (None: still open at ``limit``)."""
    start = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - start < limit:
        try:
            if trickle:
                sock.send(trickle)
            data = sock.recv(65536)
            if not data:
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
        # an answer (408 and such): keep reading until the close
    return None


def attack_idle_and_trickle(base: str, port: int, limit: float) -> dict[str, Any]:
    idle = socket.create_connection(("127.0.0.1", port))
    trickler = socket.create_connection(("127.0.0.1", port))
    trickler.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    results: dict[str, Any] = {}

    def watch(name: str, sock: socket.socket, trickle: bytes | None) -> None:
        results[name] = open_until_closed(sock, limit, trickle)
        sock.close()

    threads = [
        threading.Thread(target=watch, args=("idle_closed_after_s", idle, None)),
        threading.Thread(target=watch, args=("trickle_closed_after_s", trickler, b"a")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def attack_big_head(port: int, pid: int, total: int, target: bool, limit: float) -> dict[str, Any]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(limit)
    cpu0, start = cpu_s(pid), time.monotonic()
    head = b"GET /" if target else b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    block = b"a" * 65536
    sent, status = 0, "none"
    with Sampler(pid) as sampler:
        try:
            sock.sendall(head)
            while sent < total and time.monotonic() - start < limit:
                sock.sendall(block)
                sent += len(block)
            sock.settimeout(5)
            answer = sock.recv(200)
            status = answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed"
        except OSError as exc:
            status = f"cut ({type(exc).__name__})"
    sock.close()
    return {
        "sent_mb": round(sent / 1024**2),
        "seconds": round(time.monotonic() - start, 1),
        "server_cpu_s": round(cpu_s(pid) - cpu0, 1),
        "peak_rss_mb": round(sampler.peak),
        "status": status,
    }


def attack_half_sent(base: str, port: int, count: int, wheel_url: str) -> dict[str, Any]:
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        except OSError:
            refused += 1
    time.sleep(1)
    out = {
        "opened": len(socks),
        "refused": refused,
        "health": status_of(base + "/health"),
        "cached_page": status_of(base + "/simple/small/"),
        "miss_page": status_of(base + "/simple/other/"),
        "cached_file": status_of(wheel_url),
    }
    for sock in socks:
        sock.close()
    return out


def attack_slow_readers(port: int, pid: int, count: int, path: str) -> dict[str, Any]:
    before = rss_mb(pid)
    socks: list[socket.socket] = []
    with Sampler(pid) as sampler:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(sock)
        time.sleep(4)
        held = rss_mb(pid)
    for sock in socks:
        sock.close()
    return {"rss_before_mb": round(before), "rss_held_mb": round(held), "peak": round(sampler.peak)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run the server from")
    parser.add_argument("--nofile", type=int, default=1024, help="server's RLIMIT_NOFILE")
    parser.add_argument("--limit", type=float, default=30, help="seconds to wait per attack")
    parser.add_argument("--head-mb", type=int, default=200)
    parser.add_argument("--skip", default="", help="comma-separated attacks to leave out")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    fake = FakeUpstream().start()
    wheel = make_wheel("small", "1.0", payload_size=3 * 1024 * 1024)
    fake.add_dist("small", wheel)
    fake.add_dist("other", make_wheel("other", "1.0"))
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}
    env["PYTHONPATH"] = str(args.tree)
    nofile = args.nofile

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    argv = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    argv += ["--cache-dir", str(tmp / "cache"), "--upstream", fake.simple_url]
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(argv, cwd=args.tree, env=env, stdout=log, stderr=log, preexec_fn=limits)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"tree": str(args.tree)}
    try:
        deadline = time.monotonic() + 30
        while status_of(base + "/health", 1) != "200":
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((tmp / "server.log").read_text())
            time.sleep(0.2)
        json_page = {"Accept": "application/vnd.pypi.simple.v1+json"}
        page = httpx.get(base + "/simple/small/", headers=json_page)
        file_path = page.json()["files"][0]["url"]
        wheel_url = httpx.URL(base + "/simple/small/").join(file_path)
        assert httpx.get(wheel_url).status_code == 200
        results["rss_idle_mb"] = round(rss_mb(proc.pid))
        attacks: dict[str, Callable[[], dict[str, Any]]] = {
            "idle_trickle": lambda: attack_idle_and_trickle(base, port, args.limit),
            "big_header": lambda: attack_big_head(
                port, proc.pid, args.head_mb * 1024**2, False, args.limit * 2
            ),
            "big_target": lambda: attack_big_head(
                port, proc.pid, args.head_mb * 1024**2, True, args.limit * 2
            ),
            "half_sent_1100": lambda: attack_half_sent(base, port, 1100, str(wheel_url)),
            "slow_readers_200": lambda: attack_slow_readers(
                port, proc.pid, 200, wheel_url.raw_path.decode()
            ),
        }
        for name, attack in attacks.items():
            if name in skip:
                continue
            started = time.monotonic()
            results[name] = attack()
            results[name]["wall_s"] = round(time.monotonic() - started, 1)
            results[name]["health_after"] = status_of(base + "/health")
            print(name, json.dumps(results[name]), flush=True)
            time.sleep(2)
        results["rss_end_mb"] = round(rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        fake.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
