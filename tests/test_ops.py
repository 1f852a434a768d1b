from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy_server import ThreadedProxy


def test_metrics__prometheus_text(proxy: ThreadedProxy) -> None:
    httpx.get(proxy.url + "/simple/demo/")
    httpx.get(proxy.url + "/files/demo/demo-1.0-py3-none-any.whl")
    response = httpx.get(proxy.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("pypi_proxy_requests_total", ())] == 2
    assert samples[("pypi_proxy_cache_misses_total", (("kind", "files"),))] == 1
    assert samples[("pypi_proxy_cache_files", ())] == 1


def test_status_page_and_health(proxy: ThreadedProxy) -> None:
    page = httpx.get(proxy.url + "/")
    assert page.status_code == 200
    assert "PIP_INDEX_URL=" in page.text and "/simple/" in page.text
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok", "offline": False}
    assert httpx.head(proxy.url + "/health").status_code == 200
    assert httpx.get(proxy.url + "/robots.txt").text.startswith("User-agent")
    stats = httpx.get(proxy.url + "/stats").json()
    assert stats["upstream_health"]["circuit"] == "closed"
    assert "prefetch" not in stats  # only with the prefetch service, as `serve` adds it
