from __future__ import annotations

from pathlib import Path

import httpx

from proxy.breaker import CLOSED, HALF_OPEN, OPEN, Breakers, CircuitBreaker
from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker__opens_probes_and_recovers() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, reset_after=10, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()  # the probe
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one
    breaker.failure()
    assert breaker.state == OPEN
    clock.now = 20
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED
    assert breaker.snapshot()["times_opened"] == 2


def test_breaker__lost_probe_is_replaced() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_after=5, clock=clock)
    breaker.failure()
    clock.now = 5
    assert breaker.allow()
    clock.now = 11
    assert breaker.allow()


def test_breaker__off_when_threshold_zero() -> None:
    breaker = CircuitBreaker(threshold=0)
    for _ in range(100):
        breaker.failure()
    assert breaker.allow()


def test_breakers__one_per_origin_bounded() -> None:
    breakers = Breakers("https://index.test:443", threshold=1, limit=3)
    breakers.for_origin("https://a.test:443").failure()
    for name in ("b", "c", "d"):
        breakers.for_origin(f"https://{name}.test:443")
    snapshot = breakers.snapshot()
    assert snapshot["circuit"] == CLOSED  # the index's own
    origins = {o["origin"]: o["circuit"] for o in snapshot["origins"]}
    # Closed ones are forgotten first; the open one and the index are kept.
    assert origins == {"https://a.test:443": OPEN, "https://d.test:443": CLOSED}


def test_dead_upstream__clients_stop_waiting_for_timeouts(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "c",
            "retries": 0,
            "index_ttl": 0,
            "read_timeout": 0.5,
            "breaker_threshold": 2,
            "breaker_reset": 1,
        },
    )
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        upstream.delay = 2.0  # every request now times out
        for _ in range(2):
            assert httpx.get(proxy.url + "/simple/demo/", timeout=10).status_code == 200
        upstream.reset_log()
        stale = httpx.get(proxy.url + "/simple/demo/", timeout=10)
        assert stale.status_code == 200
        assert stale.elapsed.total_seconds() < 0.3  # no timeout waited for
        assert upstream.requests == []
        health = httpx.get(proxy.url + "/stats").json()["upstream_health"]
        assert health["circuit"] == "open"
        upstream.delay = 0
        import time

        time.sleep(1.1)
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200  # the probe
        assert httpx.get(proxy.url + "/stats").json()["upstream_health"]["circuit"] == "closed"
