"""An upstream page can cost only so much: capped on the wire and inflated, with one deadline
for the whole exchange; past a limit, the stored page (stale) or a clean 502 (issue 8, item 3)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.proxy_server import ThreadedProxy

JSON = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
PAGE = "/simple/demo/"


def padded_page(size: int) -> bytes:
    """A valid project page of about ``size`` bytes (whitespace is valid JSON)."""
    head = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": []})
    return (head[:-1] + " " * size + "}").encode()


def _proxy(tmp_path: Path, fake: FakeUpstream, **overrides: object) -> ThreadedProxy:
    from proxy.settings import load_settings

    values: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 1,
        "connect_timeout": 2,
        "read_timeout": 5,
        "max_page_size": "1M",
        "max_page_inflated": "4M",
        "upstream_deadline": 1,
    }
    values.update(overrides)
    return ThreadedProxy(load_settings(None, {}, values))


def index_bytes(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in (tmp_path / "cache" / "index").rglob("*") if p.is_file())


ATTACKS = {
    "wire": RawAnswer(200, JSON, padded_page(3 * 1024**2)),
    # 20 MB of JSON that travels as about 20 KB: stopped once 4 MB have been inflated.
    "gzip-bomb": RawAnswer(
        200, {**JSON, "Content-Encoding": "gzip"}, gzip.compress(padded_page(20 * 1024**2))
    ),
    "no-length": RawAnswer(200, JSON, padded_page(3 * 1024**2), length=False),
    # One byte every half second: each read is quick, the whole never ends in time.
    "trickle": RawAnswer(200, JSON, padded_page(40), chunk=1, pace=0.5),
}


REASONS = {
    "wire": "max_page_size",
    "no-length": "max_page_size",
    "gzip-bomb": "max_page_inflated",
    "trickle": "upstream_deadline",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_page_limits__clean_502_when_not_cached(
    tmp_path: Path, upstream: FakeUpstream, attack: str
) -> None:
    upstream.raw_routes[PAGE] = ATTACKS[attack]
    with _proxy(tmp_path, upstream) as proxy:
        started = time.monotonic()
        response = httpx.get(proxy.url + PAGE, timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code == 502, response.text
        assert REASONS[attack] in response.text
        # Within the deadline (1 s) and a little, though the read timeout is 5 s and the
        # trickle would take 20 s.
        assert elapsed < 3
        assert httpx.get(proxy.url + "/health").status_code == 200
    assert index_bytes(tmp_path) < 512 * 1024  # nothing of the attack was kept


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_page_limits__stale_page_when_cached(
    tmp_path: Path, upstream: FakeUpstream, attack: str
) -> None:
    with _proxy(tmp_path, upstream, index_ttl=0) as proxy:
        good = httpx.get(proxy.url + PAGE, headers={"Accept": JSON["Content-Type"]})
        assert good.status_code == 200 and len(good.json()["files"]) == 2
        upstream.raw_routes[PAGE] = ATTACKS[attack]
        started = time.monotonic()
        stale = httpx.get(proxy.url + PAGE, headers={"Accept": JSON["Content-Type"]}, timeout=30)
        assert time.monotonic() - started < 3
        assert stale.status_code == 200 and stale.json() == good.json()
    assert index_bytes(tmp_path) < 512 * 1024


def test_page_limits__real_pages_pass(tmp_path: Path, upstream: FakeUpstream) -> None:
    # Just under the caps, compressed and not: still a page.
    upstream.raw_routes[PAGE] = RawAnswer(
        200, {**JSON, "Content-Encoding": "gzip"}, gzip.compress(padded_page(3 * 1024**2))
    )
    with _proxy(tmp_path, upstream) as proxy:
        response = httpx.get(proxy.url + PAGE, headers={"Accept": JSON["Content-Type"]})
        assert response.status_code == 200 and response.json()["files"] == []
    upstream.raw_routes[PAGE] = RawAnswer(200, JSON, padded_page(900 * 1024))
    with _proxy(tmp_path, upstream, cache_dir=tmp_path / "c2") as proxy:
        response = httpx.get(proxy.url + PAGE, headers={"Accept": JSON["Content-Type"]})
        assert response.status_code == 200 and response.json()["files"] == []


@pytest.mark.anyio
async def test_read_bounded__bomb_stops_early() -> None:
    from proxy.bounded import STEP, PageTooLarge, read_bounded

    wire = gzip.compress(b"\0" * 64 * 1024**2)  # about 64 KB
    chunks = [wire[i : i + 1024] for i in range(0, len(wire), 1024)]
    taken = 0

    async def feed() -> AsyncIterator[bytes]:
        nonlocal taken
        for chunk in chunks:
            taken += 1
            yield chunk

    with pytest.raises(PageTooLarge):
        await read_bounded(
            feed(), "gzip", max_wire=10 * 1024**2, max_inflated=4 * 1024**2, shown="bomb"
        )
    # Stopped at the cap: a sixteenth of the way in, not after inflating all of it.
    assert taken < len(chunks) // 8
    assert STEP <= 4 * 1024**2


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "two-members", ""])
async def test_read_bounded__inflates(encoding: str) -> None:
    import zlib

    from proxy.bounded import read_bounded

    body = b"<html>" + b"x" * 3_000_000 + b"</html>"
    wire = {
        "gzip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "raw-deflate": zlib.compress(body, wbits=-15),
        "two-members": gzip.compress(body[:1000]) + gzip.compress(body[1000:]),
        "": body,
    }[encoding]

    async def feed() -> AsyncIterator[bytes]:
        for i in range(0, len(wire), 7000):
            yield wire[i : i + 7000]

    header = {"raw-deflate": "deflate", "two-members": "gzip"}.get(encoding, encoding)
    got = await read_bounded(feed(), header, max_wire=len(wire), max_inflated=len(body), shown="p")
    assert got == body
