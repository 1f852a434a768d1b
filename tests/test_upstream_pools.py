"""Files must not starve pages, a busy proxy is not a sick upstream, and one failing origin
does not open the circuit for another (issue 8, item 4)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

SLOW_FILES = 120  # more than the 100 connections one pool had for pages and files together


def _proxy(tmp_path: Path, fake: FakeUpstream, **overrides: object) -> ThreadedProxy:
    from proxy.settings import load_settings

    values: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 1,
        "connect_timeout": 2,
        "read_timeout": 2,
        "breaker_threshold": 5,
    }
    values.update(overrides)
    return ThreadedProxy(load_settings(None, {}, values))


@pytest.fixture
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        for i in range(SLOW_FILES):
            fake.add_dist("slow", make_wheel("slow", f"1.{i}", payload_size=20_000))
        fake.add_dist("other", make_wheel("other", "1.0"))
        yield fake


async def _start_downloads(base: str, paths: list[str]) -> None:
    """Start every download and hang up once its answer begins (the fills go on without us)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=1) as client:

        async def one(path: str) -> None:
            try:
                async with client.stream("GET", base + path):
                    pass
            except httpx.TimeoutException:
                pass  # still waiting for a connection upstream: that fill goes on

        await asyncio.gather(*(one(p) for p in paths))


def test_slow_files__page_still_served_and_breaker_stays_closed(
    tmp_path: Path, slow_upstream: FakeUpstream
) -> None:
    with _proxy(tmp_path, slow_upstream) as proxy:
        page = httpx.get(proxy.url + "/simple/slow/", headers={"accept": "application/*"})
        paths = [
            "/files/slow/" + f["filename"] for f in page.json()["files"]
        ]  # proxy URLs are /files/<project>/<filename>
        assert len(paths) == SLOW_FILES
        gate = slow_upstream.files_gate = threading.Event()  # every download hangs
        try:
            asyncio.run(_start_downloads(proxy.url, paths))
            deadline = time.monotonic() + 10
            while slow_upstream.count("/files/") < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow_upstream.count("/files/") >= 100  # the file pool is full
            started = time.monotonic()
            other = httpx.get(proxy.url + "/simple/other/", timeout=30)
            assert other.status_code == 200, other.text
            assert time.monotonic() - started < 1.5
            # The downloads past the file pool's size give up waiting for a connection here
            # (read_timeout, 2 s): that says nothing about the upstream.
            filler = proxy.runtime.filler
            assert filler is not None
            deadline = time.monotonic() + 10
            while len(filler._tasks) > 100 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            gate.set()
        deadline = time.monotonic() + 15
        while filler._tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not filler._tasks
        health = httpx.get(proxy.url + "/stats").json()["upstream_health"]
        assert health["circuit"] == "closed", health
        assert health["consecutive_failures"] == 0, health


def _page_linking(base: str, count: int) -> RawAnswer:
    files = [
        {"filename": f"demo-1.{i}-py3-none-any.whl", "url": f"{base}/x/{i}.whl", "hashes": {}}
        for i in range(count)
    ]
    body = {"meta": {"api-version": "1.1"}, "name": "demo", "files": files}
    headers = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
    return RawAnswer(200, headers, json.dumps(body).encode())


def test_failing_file_host__index_circuit_stays_closed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with FakeUpstream() as files:
        files.status_override = 503
        upstream.raw_routes["/simple/demo/"] = _page_linking(files.base_url, 6)
        port = files.base_url.rsplit(":", 1)[1]
        settings = {
            "retries": 0,
            "index_ttl": 0,
            "allowed_file_hosts": [f"127.0.0.1:{port}"],
            "allowed_private_networks": ["127.0.0.0/8"],
        }
        with _proxy(tmp_path, upstream, **settings) as proxy:
            for i in range(5):
                answer = httpx.get(proxy.url + f"/files/demo/demo-1.{i}-py3-none-any.whl")
                assert answer.status_code == 502
            assert files.count("/x/") == 5
            health = httpx.get(proxy.url + "/stats").json()["upstream_health"]
            assert health["circuit"] == "closed", health
            assert health["consecutive_failures"] == 0, health
            [file_host] = health["origins"]
            assert file_host["origin"] == f"http://127.0.0.1:{port}"
            assert file_host["circuit"] == "open"
            # The index is still asked; the failing file host is not.
            upstream.reset_log()
            page = httpx.get(proxy.url + "/simple/demo/")
            assert page.status_code == 200
            assert upstream.count("/simple/demo/") == 1
            answer = httpx.get(proxy.url + "/files/demo/demo-1.5-py3-none-any.whl")
            assert answer.status_code == 502
            assert files.count("/x/") == 5
