"""kill -9 at any moment: after a restart every file is whole or absent, pages load, and what
was half-done is redone."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, stored
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.e2e


def kill9(proxy: SubprocessProxy) -> None:
    """A crash of the whole server: the supervisor and every worker die at once (a worker
    left running would finish the download the crash was meant to interrupt)."""
    assert proxy.process is not None
    pid = proxy.process.pid
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children += [int(c) for c in (task / "children").read_text().split()]
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    proxy.process.send_signal(signal.SIGKILL)
    proxy.process.wait()


def test_kill_during_download__restart_is_consistent(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    big = make_wheel("big", "1.0", payload_size=3 * 1024 * 1024)
    upstream.add_dist("big", big)
    cache = tmp_path / "cache"
    upstream.throttle = 0.02
    proxy = SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache).start()
    url = proxy.url + f"/files/big/{big.filename}"

    def fetch() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=30)

    client = threading.Thread(target=fetch)
    client.start()
    deadline = time.monotonic() + 10
    while not list((cache / "tmp").glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert list((cache / "tmp").glob("*.part")), "the download should be under way"
    kill9(proxy)
    client.join()
    assert big.filename not in stored(cache)
    upstream.throttle = 0
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as again:
        assert not list((cache / "tmp").glob("*.part"))  # swept at start
        assert httpx.get(again.url + f"/files/big/{big.filename}").content == big.content
    assert all_whole(cache)


def test_kill_at_random_moments__cache_stays_consistent(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    for i in range(40):
        upstream.add_dist(f"p{i}", make_wheel(f"p{i}", "1.0", payload_size=100_000))
    cache = tmp_path / "cache"
    rng = random.Random(4)
    upstream.throttle = 0.005
    for _round in range(5):
        proxy = SubprocessProxy(
            "--upstream", upstream.simple_url, "--index-ttl", "0", cache_dir=cache
        ).start()
        stop = threading.Event()

        def load(offset: int, base: str = proxy.url, stop: threading.Event = stop) -> None:
            with httpx.Client(timeout=10) as client:
                i = offset
                while not stop.is_set():
                    name = f"p{i % 40}"
                    try:
                        client.get(f"{base}/simple/{name}/")
                        client.get(f"{base}/files/{name}/{name}-1.0-py3-none-any.whl")
                    except httpx.HTTPError:
                        pass
                    i += 7

        threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.0))
        kill9(proxy)
        stop.set()
        for t in threads:
            t.join()
        assert all_whole(cache)
    upstream.throttle = 0
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        for i in range(40):
            name = f"p{i}"
            assert httpx.get(f"{proxy.url}/simple/{name}/").status_code == 200
            body = httpx.get(f"{proxy.url}/files/{name}/{name}-1.0-py3-none-any.whl").content
            assert body == make_wheel(name, "1.0", payload_size=100_000).content
    assert not list((cache / "tmp").glob("*.part"))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "verify", "--offline", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0
    assert report["corrupt"] == 0
    assert report["ok"] >= 40
