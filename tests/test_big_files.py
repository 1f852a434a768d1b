"""Large files on a miss (issue 10): written and hashed off the event loop, and released to
their readers once verified, before the flush to disk that can take seconds. Integrity holds:
a lying upstream's bytes are never completed, and the verified file is stored after."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from proxy.fill import RELEASE_BEFORE_FLUSH
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import make_wheel
from tests.test_integrity_files import _fetch_until_whole

pytestmark = pytest.mark.e2e
SIZE = RELEASE_BEFORE_FLUSH + 3 * 1024 * 1024 + 17  # over the threshold, not a batch multiple


def _stored(cache: Path, filename: str) -> list[Path]:
    return [p for p in (cache / "files").rglob(filename) if p.is_file()]


def test_big_file__streamed_verified_then_stored_whole(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    built = make_wheel("huge", "1.0", payload_size=SIZE)
    upstream.add_dist("huge", built)
    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        assert httpx.get(f"{proxy.url}/simple/huge/").status_code == 200
        url = f"{proxy.url}/files/huge/{built.filename}"
        got = httpx.get(url, timeout=60)
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == built.sha256
        deadline = time.monotonic() + 20
        while not _stored(cache, built.filename):
            assert time.monotonic() < deadline, "verified and sent, but never stored"
            time.sleep(0.05)
        (path,) = _stored(cache, built.filename)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == built.sha256
        fetched = upstream.count("/files/huge/")
        again = httpx.get(url, timeout=60)
        assert hashlib.sha256(again.content).hexdigest() == built.sha256
        assert upstream.count("/files/huge/") == fetched  # a hit


def test_big_file__lying_upstream_never_completed_by_any_client(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    built = make_wheel("huge", "1.0", payload_size=SIZE)
    upstream.add_dist("huge", built)
    upstream.corrupt_first[built.filename] = 1  # one lying answer, then the truth
    upstream.corrupt_pause = 0.0
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache
    ) as proxy:
        assert httpx.get(f"{proxy.url}/simple/huge/").status_code == 200
        url = f"{proxy.url}/files/huge/{built.filename}"
        outcomes: list[str] = []
        deadline = time.monotonic() + 60
        clients = [
            threading.Thread(target=_fetch_until_whole, args=(url, deadline, outcomes))
            for _ in range(3)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    completed = [o for o in outcomes if len(o) == 64]
    assert len(completed) == 3, outcomes
    assert set(completed) == {built.sha256}, outcomes  # never the lie's digest
    assert upstream.count("/files/huge/") >= 2, "the lie was never sent: the case was not tried"
    (path,) = _stored(cache, built.filename)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == built.sha256
