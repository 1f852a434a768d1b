"""Counting each request once, and /metrics: exact values, right types, the histogram."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import exposition, families
from proxy.settings import load_settings
from proxy.stats import BUCKETS, Stats, latency, series, top_projects, totals, write
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy
from tests.support.wheels import make_wheel

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html; q=0.01"


def _stats_when(proxy: ThreadedProxy, requests: int) -> dict[str, Any]:
    """/stats once it has counted ``requests`` client requests: a request is counted when its
    answer is complete, which may be a moment after the client has read it."""
    deadline = time.monotonic() + 5
    while True:
        data: dict[str, Any] = httpx.get(proxy.url + "/stats").json()
        if data["requests"] >= requests or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counting__known_mix_counted_exactly(proxy: ThreadedProxy, upstream: FakeUpstream) -> None:
    upstream.add_dist("extra", make_wheel("extra", "0.1"))
    demo1 = "/files/demo/demo-1.0-py3-none-any.whl"
    demo2 = "/files/demo/demo-2.0-py3-none-any.whl"
    helper = "/files/helper/helper-1.5-py3-none-any.whl"
    extra = "/files/extra/extra-0.1-py3-none-any.whl"
    ranged = {"range": "bytes=0-9"}
    with httpx.Client(base_url=proxy.url, headers={"accept": PIP_ACCEPT}) as client:
        mix = [
            ("GET", "/simple/demo/", {}, 200),  # page miss
            ("GET", "/simple/demo/", {}, 200),  # page hit (the fast path)
            ("HEAD", "/simple/helper/", {}, 200),  # page miss, by HEAD
            ("GET", "/simple/helper/", {}, 200),  # page hit
            ("GET", "/simple/nope/", {}, 404),  # not found (the upstream asked)
            ("GET", "/simple/nope/", {}, 404),  # not found (remembered)
            ("GET", "/simple/", {}, 200),  # root miss
            ("GET", "/simple/", {}, 200),  # root hit
            ("GET", demo1, {}, 200),  # file miss
            ("GET", demo1, {}, 200),  # file hit
            ("HEAD", demo2, {}, 200),  # file miss, by HEAD (the page's size: nothing fetched)
            ("GET", demo2, {}, 200),  # file miss
            ("GET", demo2, {}, 200),  # file hit
            ("GET", helper, ranged, 206),  # file miss, by Range (passed through; fill goes on)
            ("WAIT", "helper-1.5-py3-none-any.whl", {}, 0),  # until that fill is stored
            ("GET", helper, ranged, 206),  # file hit, by Range
            ("GET", "/files/demo/demo-9.9-py3-none-any.whl", {}, 404),  # not found
            ("GET", extra, {}, 200),  # file miss whose page was fetched too: one miss
        ]
        for method, path, headers, status in mix:
            if method == "WAIT":
                files = proxy.settings.cache_dir / "files"
                deadline = time.monotonic() + 10
                while not any(files.rglob(path)):
                    assert time.monotonic() < deadline, f"{path} never stored"
                    time.sleep(0.02)
                continue
            assert client.request(method, path, headers=headers).status_code == status, path
    data = _stats_when(proxy, len(mix) - 1)
    assert data["requests"] == 17
    assert data["pages"] == {"hits": 3, "misses": 3, "stale_served": 0, "revalidated": 0}
    assert data["files"] == {"hits": 3, "misses": 5}
    assert data["not_found"] == 3
    assert (data["hits"], data["misses"]) == (6, 8)
    assert data["hit_ratio"] == round(6 / 14, 4)
    minute = data["last_hour"][-1]
    assert (minute["requests"], minute["hits"], minute["misses"]) == (17, 6, 8)
    # Names that are not found are not listed: a scanner must not fill the top projects.
    top = {p["project"]: p["requests"] for p in data["top_projects"]}
    assert top == {"demo": 7, "helper": 4, "extra": 1}

    samples = _samples(httpx.get(proxy.url + "/metrics").text)
    assert samples[("pypi_proxy_requests_total", ())] == 17
    assert samples[("pypi_proxy_cache_hits_total", (("kind", "pages"),))] == 3
    assert samples[("pypi_proxy_cache_misses_total", (("kind", "files"),))] == 5
    assert samples[("pypi_proxy_not_found_total", ())] == 3
    count = "pypi_proxy_request_duration_seconds_count"
    by_outcome = {
        (labels[1][1], labels[0][1]): value
        for (name, labels), value in samples.items()
        if name == count and labels[1][1] in ("page", "root", "file")
    }
    assert by_outcome == {
        ("page", "hit"): 2,
        ("page", "miss"): 2,
        ("page", "not_found"): 2,
        ("root", "hit"): 1,
        ("root", "miss"): 1,
        ("file", "hit"): 3,
        ("file", "miss"): 5,
        ("file", "not_found"): 1,
    }


def test_counting__stale_page_is_one_miss(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "c",
            "index_ttl": 0,
            "retries": 0,
        },
    )
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        upstream.down = True
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        assert httpx.get(proxy.url + "/simple/helper/").status_code == 502
        data = _stats_when(proxy, 3)
        errors = data["upstream_errors_by_origin"]
    assert data["requests"] == 3
    assert data["pages"]["misses"] == 2 and data["pages"]["stale_served"] == 1
    assert data["pages"]["hits"] == 0 and data["not_found"] == 0
    assert data["upstream_errors"] == 2
    assert errors == {upstream.base_url: 2}  # both by the index's origin


def test_metrics__exact_integers_and_types(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "c")
    try:
        stats = Stats()
        stats.add("bytes_served", 496_423_816)
        stats.request("file", "hit", 0.003, "demo")
        stats.request("file", "hit", 45.0, "demo")
        stats.request("ops", "ok", 0.0001)
        write(storage, stats.take())
        numbers = totals(storage)
        histogram = latency(storage)
    finally:
        storage.close()
    data: dict[str, Any] = {
        "version": "1.2.3",
        "requests": numbers["requests"],
        "not_found": 0,
        "bytes_served": numbers["bytes_served"],
        "bytes_fetched": 0,
        "upstream_errors": 0,
        "integrity_errors": 0,
        "entries_dropped": 0,
        "pages_distrusted": 0,
        "pages": {"hits": 0, "misses": 0, "stale_served": 0, "revalidated": 0},
        "files": {"hits": 2, "misses": 0},
        "evicted": {"files": 0, "bytes": 0},
        "uptime_seconds": 12.5,
        "offline": True,
        "cache": {"projects": 1, "files": 2, "bytes": 3_000_000_123},
        "hit_ratio": 1.0,
        "max_cache_size": None,
        "upstream_health": {
            "circuit": "open",
            "consecutive_failures": 5,
            "times_opened": 1,
            "probe_in_seconds": 3.0,
            "origin": "http://127.0.0.1:1",
            "origins": [{"origin": "http://files:80", "circuit": "closed"}],
        },
        "upstream_errors_by_origin": {"http://127.0.0.1:1": 7},
        "prefetch": {
            "state": "idle",
            "queue": 4,
            "lag": 0,
            "mirror_serial": 123456789,
            "last_run": {"started": 1.5e9, "finished": 1_700_000_000.0, "result": "ok"},
        },
    }
    text = exposition(families(data, histogram))
    assert "pypi_proxy_bytes_served_total 496423816\n" in text
    assert "pypi_proxy_cache_bytes 3000000123\n" in text
    assert "e+" not in text
    types = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    for gauge in (
        "pypi_proxy_offline",
        "pypi_proxy_prefetch_queue",
        "pypi_proxy_prefetch_last_run_finished_timestamp_seconds",
        "pypi_proxy_prefetch_last_success_timestamp_seconds",
        "pypi_proxy_cache_bytes",
        "pypi_proxy_cache_files",
        "pypi_proxy_upstream_circuit",
    ):
        assert types[gauge] == "gauge", gauge
    assert types["pypi_proxy_bytes_served_total"] == "counter"
    assert types["pypi_proxy_request_duration_seconds"] == "histogram"
    samples = _samples(text)  # the official parser reads it back
    assert samples[("pypi_proxy_prefetch_last_success_timestamp_seconds", ())] == 1.7e9
    assert samples[("pypi_proxy_prefetch_mirror_serial", ())] == 123456789
    assert (
        samples[
            ("pypi_proxy_upstream_circuit", (("origin", "http://127.0.0.1:1"), ("state", "open")))
        ]
        == 1
    )
    origin = (("origin", "http://127.0.0.1:1"),)
    assert samples[("pypi_proxy_upstream_origin_errors_total", origin)] == 7
    file_hit = (("outcome", "hit"), ("route", "file"))
    le = "pypi_proxy_request_duration_seconds_bucket"
    assert samples[(le, (("le", "0.001"), *file_hit))] == 0
    assert samples[(le, (("le", "0.005"), *file_hit))] == 1
    assert samples[(le, (("le", repr(BUCKETS[-1])), *file_hit))] == 1
    assert samples[(le, (("le", "+Inf"), *file_hit))] == 2
    assert samples[("pypi_proxy_request_duration_seconds_count", file_hit)] == 2
    assert abs(samples[("pypi_proxy_request_duration_seconds_sum", file_hit)] - 45.003) < 1e-6
    assert numbers["requests"] == 2 and numbers["file_hits"] == 2  # /stats is not a client's


def test_stats__workers_add_up_in_the_shared_store(tmp_path: Path) -> None:
    """Two processes' counts (two Stats over one cache directory) add up, series and top
    projects included; the top list stays bounded."""
    first, second = Storage(tmp_path / "c"), Storage(tmp_path / "c")
    try:
        a, b = Stats(), Stats()
        for i in range(150):
            a.request("page", "hit", 0.01, f"p{i}")
        b.request("page", "miss", 0.2, "p0")
        b.request("file", "miss", 0.2, "p0")
        write(first, a.take(), now=6000.0)
        write(second, b.take(), now=6000.0)
        numbers = totals(first)
        rows = series(second, 6000.0)
        top = top_projects(first, 3)
        histogram = {(s.route, s.outcome): s.count for s in latency(second)}
        pending: Counter[str] = Counter({"requests": 1})
        assert totals(second, pending)["requests"] == 153 and not pending
    finally:
        first.close()
        second.close()
    assert (numbers["requests"], numbers["page_hits"], numbers["page_misses"]) == (152, 150, 1)
    assert numbers["file_misses"] == 1
    assert len(rows) == 60 and rows[-1] == {
        "minute": 6000,
        "requests": 152,
        "hits": 150,
        "misses": 2,
    }
    assert top[0] == ("p0", 3)
    assert histogram == {("page", "hit"): 150, ("page", "miss"): 1, ("file", "miss"): 1}


def test_metrics__two_workers_report_one_total(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Whichever worker answers the scrape, the totals are every worker's (after their next
    flush, every two seconds)."""
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=tmp_path / "cache"
    ) as proxy:
        for _ in range(10):  # a new connection each: the two workers share them out
            assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
            assert httpx.get(proxy.url + "/files/demo/demo-1.0-py3-none-any.whl").is_success
        deadline = time.monotonic() + 10
        while True:
            samples = _samples(httpx.get(proxy.url + "/metrics").text)
            if samples[("pypi_proxy_requests_total", ())] == 20 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert samples[("pypi_proxy_requests_total", ())] == 20
    counted = sum(
        value
        for (name, labels), value in samples.items()
        if name == "pypi_proxy_request_duration_seconds_count"
        and dict(labels)["route"] in ("page", "file")
    )
    assert counted == 20
    hits = samples[("pypi_proxy_cache_hits_total", (("kind", "files"),))]
    misses = samples[("pypi_proxy_cache_misses_total", (("kind", "files"),))]
    assert hits + misses == 10 and misses >= 1
