"""Hostile clients at the real server (``pypi-proxy serve`` in a subprocess, on loopback):
connections that idle, trickle, send endless heads, never read, or come by the hundred.
Times and counts are kept small with lowered timeouts, caps and open-file limits."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.e2e

JSON = {"accept": "application/vnd.pypi.simple.v1+json"}


def connect(proxy: SubprocessProxy, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", proxy.port))
    return sock


def read_until_closed(
    sock: socket.socket, limit: float, trickle: bytes = b""
) -> tuple[float, bytes]:
    """Seconds until the server closed the connection and what it said; fails at ``limit``."""
    start, answer = time.monotonic(), b""
    sock.settimeout(0.25)
    while time.monotonic() - start < limit:
        try:
            if trickle:
                sock.send(trickle)
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return time.monotonic() - start, answer
        if not data:
            return time.monotonic() - start, answer
        answer += data
    pytest.fail(f"connection still open after {limit} s")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def start(
    upstream: FakeUpstream, cache: Path, nofile: int | None = None, **env: str
) -> SubprocessProxy:
    settings = {f"PYPI_PROXY_{k.upper()}": v for k, v in env.items()}
    # One worker: the limits under test are each worker's own (workers: auto multiplies them).
    return SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        "--workers",
        "1",
        cache_dir=cache,
        env=settings,
        nofile=nofile,
    ).start()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SubprocessProxy, str]]:
    """One server for the tests that can share it: short timeouts, 256 open files."""
    with FakeUpstream() as upstream:
        upstream.add_dist("demo", make_wheel("demo", "1.0"))
        upstream.add_dist("helper", make_wheel("helper", "1.5"))
        wheel = make_wheel("big", "1.0", payload_size=3 * 1024 * 1024)
        upstream.add_dist("big", wheel)
        cache = tmp_path_factory.mktemp("served") / "c"
        proxy = start(upstream, cache, 256, idle_timeout="1", head_timeout="1.5", send_timeout="3")
        try:
            yield proxy, f"/files/big/{wheel.filename}"
        finally:
            proxy.stop()


@pytest.fixture
def quick(served: tuple[SubprocessProxy, str]) -> SubprocessProxy:
    return served[0]


def test_connections__idle_and_trickled_head_cut(quick: SubprocessProxy) -> None:
    with connect(quick) as idle:
        took, said = read_until_closed(idle, 6)
    assert 0.8 < took < 3 and said == b""
    with connect(quick) as trickler:
        trickler.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took, said = read_until_closed(trickler, 8, trickle=b"a")  # a byte every 0.25 s
    assert 1.2 < took < 5
    assert said.startswith(b"HTTP/1.1 408 ")
    # and after a request, the keep-alive connection is closed once idle
    with connect(quick) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        took, said = read_until_closed(sock, 6)
    assert said.startswith(b"HTTP/1.1 200 ") and 0.8 < took < 3
    assert httpx.get(quick.url + "/health").status_code == 200


def test_connections__unread_body_trickled_after_answer_cut(quick: SubprocessProxy) -> None:
    """A body nobody reads, trickled on after its answer, gets the same deadline as a head."""
    with connect(quick) as sock:
        sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        took, said = read_until_closed(sock, 8, trickle=b"a")
    assert said.startswith(b"HTTP/1.1 405 ")
    assert 1.2 < took < 5


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", b"431"),
        (b"GET /simple/", b"414"),
    ],
)
def test_connections__endless_head_refused_while_reading(
    quick: SubprocessProxy, head: bytes, status: bytes
) -> None:
    assert quick.process is not None
    before = rss_kb(quick.process.pid)
    sent, block = 0, b"a" * 65536
    with connect(quick) as sock:
        sock.sendall(head)
        try:
            while sent < 32 * 1024**2:  # the head never ends; the server must not wait for it
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass
        took, said = read_until_closed(sock, 6)
    assert said.split(b" ")[1] == status, said[:100]
    assert sent < 32 * 1024**2 or took < 4
    assert rss_kb(quick.process.pid) - before < 16 * 1024
    assert httpx.get(quick.url + "/health").status_code == 200


def test_connections__half_sent_flood_leaves_room(upstream: FakeUpstream, tmp_path: Path) -> None:
    """At a low open-file limit, more half-sent requests than descriptors (and the default,
    long head deadline): the oldest idle ones are closed to make room, and /health, a cached
    page, a miss and a file still answer."""
    wheel = make_wheel("big", "1.0", payload_size=3 * 1024 * 1024)
    upstream.add_dist("big", wheel)
    three_mb = f"/files/big/{wheel.filename}"
    proxy = start(upstream, tmp_path / "c", 256)
    try:
        flood(proxy, three_mb)
    finally:
        proxy.stop()


def flood(proxy: SubprocessProxy, three_mb: str) -> None:
    assert httpx.get(proxy.url + "/simple/demo/", headers=JSON).status_code == 200
    assert httpx.get(proxy.url + three_mb).status_code == 200
    held: list[socket.socket] = []
    for _ in range(320):
        sock = connect(proxy)
        sock.sendall(b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    with httpx.Client(timeout=5) as client:
        assert client.get(proxy.url + "/health").status_code == 200
        assert client.get(proxy.url + "/simple/demo/", headers=JSON).status_code == 200
        assert client.get(proxy.url + "/simple/helper/", headers=JSON).status_code == 200
        assert client.get(proxy.url + three_mb).status_code == 200
    closed = 0
    for sock in held:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:  # still open
            pass
        except OSError:
            closed += 1
        sock.close()
    assert closed >= 320 - 192  # the cap at 256 open files is 192 connections


def test_connections__all_busy_health_only(upstream: FakeUpstream, tmp_path: Path) -> None:
    """Every slot busy (clients that never read a download): a newcomer still gets /health,
    and a clean 503 for anything else, even when it evicts an idle overflow connection; once
    the stalled sends time out the slots come back, and a slow but steady reader is kept."""
    wheel = make_wheel("big", "1.0", payload_size=3 * 1024 * 1024)
    upstream.add_dist("big", wheel)
    three_mb = f"/files/big/{wheel.filename}"
    proxy = start(upstream, tmp_path / "c", max_connections="3", send_timeout="1")
    with contextlib.ExitStack() as stack:
        stack.callback(proxy.stop)
        assert httpx.get(proxy.url + three_mb).status_code == 200
        stalled = []
        for _ in range(3):
            sock = stack.enter_context(connect(proxy, rcvbuf=4096))
            sock.sendall(f"GET {three_mb} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(sock)
        time.sleep(0.5)
        with httpx.Client(timeout=5) as client:
            assert client.get(proxy.url + "/health").status_code == 200
            busy = client.get(proxy.url + "/simple/demo/")
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        # idle overflow connections make room only for more overflow, never past the cap
        with connect(proxy) as first, connect(proxy) as second:
            for sock in (first, second):
                sock.sendall(b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n")
            assert httpx.get(proxy.url + "/simple/demo/", timeout=5).status_code == 503
        time.sleep(2)  # each send is cut once it has made no progress for 1 s
        for sock in stalled:
            _, said = read_until_closed(sock, 6)
            assert len(said) < 3 * 1024 * 1024
            sock.close()
        assert httpx.get(proxy.url + "/simple/demo/", timeout=5).status_code == 200
        # a slow reader that keeps taking bytes is not stalled: it outlives send_timeout
        with connect(proxy, rcvbuf=4096) as slow:
            slow.sendall(f"GET {three_mb} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got, started = 0, time.monotonic()
            while time.monotonic() - started < 3:
                data = slow.recv(4096)
                assert data, "a slow but steady reader was cut"
                got += len(data)
                time.sleep(0.2)
            assert 0 < got < 3 * 1024 * 1024


def test_connections__slow_readers_hold_little_memory(served: tuple[SubprocessProxy, str]) -> None:
    proxy, three_mb = served
    assert proxy.process is not None
    assert httpx.get(proxy.url + three_mb).status_code == 200
    before = rss_kb(proxy.process.pid)
    readers = []
    for _ in range(100):
        sock = connect(proxy, rcvbuf=4096)
        sock.sendall(f"GET {three_mb} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        readers.append(sock)
    time.sleep(1.5)
    grown_kb = rss_kb(proxy.process.pid) - before
    for sock in readers:
        sock.close()
    # about two 64 KiB chunks and the request's objects each; 1 MiB chunks held ~2 MB
    assert grown_kb < 100 * 400, grown_kb
    assert httpx.get(proxy.url + "/health", timeout=5).status_code == 200
