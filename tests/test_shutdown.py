"""Stopping a real server process mid-transfer, and starting one on a port in use."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole
from tests.support.proxy_server import SubprocessProxy, free_port
from tests.support.wheels import Built, make_wheel

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "proxy", "serve"]
SIZE = 2 * 1024 * 1024  # 32 chunks of 64 KiB from the fake upstream, `throttle` s after each


@dataclass
class Download:
    started: threading.Event = field(default_factory=threading.Event)
    received: int = 0
    digest: str = ""
    error: str = ""


def _download(url: str, into: Download) -> None:
    sha = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                sha.update(chunk)
                into.received += len(chunk)
                into.started.set()
        into.digest = sha.hexdigest()
    except httpx.HTTPError as exc:
        into.error = repr(exc)
    finally:
        into.started.set()


def _start(upstream: FakeUpstream, tmp_path: Path, *args: str) -> tuple[SubprocessProxy, Built]:
    big = make_wheel("big", "1.0", payload_size=SIZE)
    upstream.add_dist("big", big)
    proxy = SubprocessProxy(
        "--upstream", upstream.simple_url, *args, cache_dir=tmp_path / "cache"
    ).start()
    return proxy, big


def _transfer(proxy: SubprocessProxy, big: Built) -> tuple[Download, threading.Thread]:
    download = Download()
    thread = threading.Thread(
        target=_download, args=(proxy.url + f"/files/big/{big.filename}", download)
    )
    thread.start()
    assert download.started.wait(30), "the transfer should start"
    assert download.received, f"the transfer should be under way: {download.error}"
    return download, thread


def _wait(proxy: SubprocessProxy) -> int:
    assert proxy.process is not None
    return proxy.process.wait(timeout=60)


def test_sigint_during_transfer__finishes_it_then_exits_0_quietly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.throttle = 0.05  # about 1.6 s for the whole file
    proxy, big = _start(upstream, tmp_path, "--shutdown-grace", "30")
    try:
        download, thread = _transfer(proxy, big)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGINT)
        status = _wait(proxy)
        thread.join(30)
    finally:
        proxy.stop()
    log = proxy.log()
    assert status == 0, log
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert download.error == "", download.error
    assert download.digest == big.sha256
    assert "stopping: waiting up to 30s for 1 transfers" in log


def test_sigterm_past_the_grace__cuts_the_transfer_and_exits_0_quietly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.throttle = 0.3  # about 10 s for the whole file
    proxy, big = _start(upstream, tmp_path, "--shutdown-grace", "1")
    try:
        download, thread = _transfer(proxy, big)
        assert proxy.process is not None
        signalled = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        thread.join(30)
        cut_after = time.monotonic() - signalled
        status = _wait(proxy)
    finally:
        upstream.throttle = 0
        proxy.stop()
    log = proxy.log()
    assert status == 0, log
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert download.error, "the client must see its transfer cut, not a whole file"
    assert download.received < len(big.content)
    assert cut_after < 6, f"cut {cut_after:.1f}s after SIGTERM, with a 1 s grace"
    assert "stopping: cut 1 unfinished transfers after 1s" in log
    assert all_whole(tmp_path / "cache")  # nothing half-written kept


def test_second_ctrl_c__cuts_at_once_quietly(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.throttle = 0.3
    proxy, big = _start(upstream, tmp_path, "--shutdown-grace", "120")
    try:
        download, thread = _transfer(proxy, big)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        signalled = time.monotonic()
        proxy.process.send_signal(signal.SIGINT)
        thread.join(30)
        cut_after = time.monotonic() - signalled
        status = _wait(proxy)
    finally:
        upstream.throttle = 0
        proxy.stop()
    log = proxy.log()
    assert status == 0, log
    assert "Traceback" not in log, log
    assert download.error
    assert cut_after < 5
    assert "cut 1 unfinished transfers on a second signal" in log


def test_shutdown_grace__from_the_environment(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.throttle = 0.3
    big = make_wheel("big", "1.0", payload_size=SIZE)
    upstream.add_dist("big", big)
    proxy = SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        cache_dir=tmp_path / "cache",
        env={"PYPI_PROXY_SHUTDOWN_GRACE": "0.5"},
    ).start()
    try:
        _, thread = _transfer(proxy, big)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGTERM)
        thread.join(30)
        status = _wait(proxy)
    finally:
        upstream.throttle = 0
        proxy.stop()
    assert status == 0
    assert "cut 1 unfinished transfers after 0.5s" in proxy.log()


def test_port_in_use__one_line_and_nonzero_exit(tmp_path: Path, upstream: FakeUpstream) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        cache = str(tmp_path / "cache")
        done = subprocess.run(
            [*SERVE, "--port", str(port), "--upstream", upstream.simple_url, "--cache-dir", cache],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")},
        )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in out
    assert len(out.strip().splitlines()) == 1, out
    assert "listening" not in out and "startup complete" not in out.lower()
    assert "Traceback" not in out


def test_workers__sigterm_finishes_the_transfer_and_exits_0_quietly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.throttle = 0.05
    proxy, big = _start(upstream, tmp_path, "--workers", "2", "--shutdown-grace", "30")
    try:
        download, thread = _transfer(proxy, big)
        assert proxy.process is not None
        proxy.process.send_signal(signal.SIGTERM)  # the supervisor passes it to each worker
        status = _wait(proxy)
        thread.join(30)
    finally:
        proxy.stop()
    log = proxy.log()
    assert status == 0, log
    assert "Traceback" not in log, log
    assert download.digest == big.sha256, download.error
    assert log.count("INFO proxy: stopped") == 2, log  # each worker stopped its own way
