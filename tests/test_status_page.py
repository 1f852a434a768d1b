"""The status page at /: pure rendering (no port), then the real page in a headless Chromium."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.web.errorring import ErrorRing
from proxy.web.status import render_page
from proxy.web.statusformat import age, size
from proxy.web.statusparts import render_main
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy

NOW = 1_780_000_000.0
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EPOCH_FLOAT = re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b")  # a Unix time of our years, as a number


def _figures(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": "1.2.3",
        "requests": 1234,
        "hits": 900,
        "misses": 100,
        "hit_ratio": 0.9,
        "not_found": 7,
        "bytes_served": 496_423_816,
        "bytes_fetched": 2_500_000_000,
        "upstream_errors": 3,
        "cache": {"projects": 12, "files": 40, "bytes": 1_200_000_000},
        "max_cache_size": 10_000_000_000,
        "uptime_seconds": 7200.0,
        "offline": False,
        "upstream": "http://mirror.example/simple/",
        "upstream_health": {
            "circuit": "open",
            "consecutive_failures": 5,
            "times_opened": 2,
            "probe_in_seconds": 12.0,
            "origin": "http://mirror.example:80",
            "origins": [{"origin": "http://files.example:80", "circuit": "closed"}],
        },
        "upstream_errors_by_origin": {"http://mirror.example:80": 3},
        "top_projects": [{"project": "demo<script>", "requests": 50}],
        "last_hour": [
            {"minute": int(NOW // 60 - 59 + i) * 60, "requests": i, "hits": i // 2, "misses": 1}
            for i in range(60)
        ],
        "recent_errors": [
            {"time": NOW - 90, "level": "WARNING", "logger": "proxy.index", "message": "stale <b>"}
        ],
        "prefetch": {
            "state": "idle",
            "mirror_serial": 1000,
            "upstream_serial": 1004,
            "lag": 4,
            "queue": 0,
            "projects": 12,
            "files": 40,
            "bytes": 1_200_000_000,
            "last_run": {
                "started": NOW - 240,
                "finished": NOW - 180,
                "result": "ok",
                "message": "12 projects",
                "seconds": 60.0,
            },
        },
    }
    data.update(extra)
    return data


def test_render__units_ages_and_no_epoch_floats() -> None:
    html = render_page(_figures(), NOW, "http://proxy.local/")
    text = re.sub(r"<[^>]+>", " ", html)
    assert "496.4 MB" in text and "2.5 GB" in text  # served, fetched
    assert "1.2 GB" in text and "of 10.0 GB (12%)" in text  # the cache against its cap
    assert "90.0%" in text  # hit ratio
    assert "3 min behind" in text and "4 changes to catch up" in text
    assert "1 min ago" in text  # the error line's age
    assert "<svg" in html and html.count('class="h"') >= 59  # the chart's hit bars
    assert "open" in text and "probe in 12 s" in text
    assert not EPOCH_FLOAT.search(text), EPOCH_FLOAT.search(text)
    assert "PIP_INDEX_URL=http://proxy.local/simple/" in text
    assert 'data-path="admin/prefetch"' in html and 'data-path="admin/verify"' in html


def test_render__escapes_what_it_shows() -> None:
    html = render_main(_figures(), NOW)
    assert "<script>" not in html and "demo&lt;script&gt;" in html
    assert "stale &lt;b&gt;" in html


def test_render__prefetch_running_shows_progress() -> None:
    running = {**_figures()["prefetch"], "state": "running", "queue": 36, "projects": 12}
    text = " ".join(re.sub(r"<[^>]+>", " ", render_main(_figures(prefetch=running), NOW)).split())
    assert "running" in text and "since 4 min ago" in text
    assert "36 projects left in the queue" in text and "25%" in text


def test_render__offline_and_never_prefetched() -> None:
    html = render_main(
        _figures(offline=True, prefetch={"state": "never run"}, max_cache_size=None), NOW
    )
    assert "Offline" in html and "Never run" in html and "no size cap" in html


def test_formatting__sizes_and_ages() -> None:
    assert [size(n) for n in (0, 999, 1000, 496_423_816, 3 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "496.4 MB",
        "3.0 TB",
    ]
    assert age(NOW - 1, NOW) == "just now"
    assert age(NOW - 180, NOW) == "3 min ago"
    assert age(NOW - 3 * 86400, NOW) == "3 days ago"
    assert age(None, NOW) == "never"


def test_error_ring__bounded_newest_first() -> None:
    import logging

    ring = ErrorRing(size=3)
    for i in range(5):
        ring.emit(logging.makeLogRecord({"msg": "bad %d", "args": (i,), "levelname": "ERROR"}))
    assert [e["message"] for e in ring.recent()] == ["bad 4", "bad 3", "bad 2"]


def _wait_for(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is not installed")
def test_status_page__in_chromium(tmp_path: Path, upstream: FakeUpstream) -> None:
    from playwright.sync_api import sync_playwright

    config = tmp_path / "config.yaml"
    config.write_text("prefetch:\n  projects: [demo]\n")
    with (
        SubprocessProxy(
            "--config",
            str(config),
            "--upstream",
            upstream.simple_url,
            cache_dir=tmp_path / "cache",
            env={"PYPI_PROXY_ADMIN_TOKEN": "adm-123"},
        ) as proxy,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(proxy.url + "/?refresh=1", timeout=20_000)
            assert "pypi-proxy" in page.inner_text("h1")
            requests = page.locator('[data-figure="requests"]')
            assert requests.inner_text() == "0"
            assert not page.locator('button[data-path="admin/prefetch"]').is_visible()

            # Figures change after requests, without reloading the page.
            with httpx.Client(base_url=proxy.url) as client:
                assert client.get("/simple/demo/").status_code == 200
                for _ in range(2):
                    wheel = client.get("/files/demo/demo-1.0-py3-none-any.whl")
                    assert wheel.status_code == 200
            page.wait_for_function(
                "document.querySelector('[data-figure=\"requests\"]').textContent === '3'",
                timeout=15_000,
            )
            assert page.locator('[data-figure="hit-ratio"]').inner_text() == "33.3%"
            assert "demo" in page.inner_text("#main table")
            served = page.locator('[data-figure="bytes-served"]').inner_text()
            assert served.endswith(" kB") or served.endswith(" B"), served

            # With the admin token, the buttons show, and starting a prefetch pass works.
            page.fill("#token", "adm-123")
            page.click("#token-form button[type=submit]")
            button = page.locator('button[data-path="admin/prefetch"]')
            assert button.is_visible()
            button.click()
            page.wait_for_function(
                "document.getElementById('result').textContent.includes(': 202')",
                timeout=10_000,
            )
            page.wait_for_function(
                "document.getElementById('main').textContent.includes('Last pass: ok')",
                timeout=30_000,
            )
            assert "adm-123" not in page.content()  # kept in sessionStorage, never shown
            stored = page.evaluate("sessionStorage.getItem('pypi-proxy-admin-token')")
            assert stored == "adm-123"
            text = page.inner_text("body")
            assert not EPOCH_FLOAT.search(text), EPOCH_FLOAT.search(text)

            shot = tmp_path / "status.png"
            page.screenshot(path=str(shot), full_page=True)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(shot, ARTIFACTS / "status.png")
            assert shot.stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()
    # The pass the page started really ran: the mirror holds the project's files.
    assert any(p.name == "demo-2.0-py3-none-any.whl" for p in (tmp_path / "cache").rglob("*.whl"))
