from __future__ import annotations

import re

import httpx

from tests.support.proxy_server import ThreadedProxy


def test_metrics__prometheus_text(proxy: ThreadedProxy) -> None:
    httpx.get(proxy.url + "/simple/demo/")
    httpx.get(proxy.url + "/files/demo/demo-1.0-py3-none-any.whl")
    response = httpx.get(proxy.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = [line for line in response.text.splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]* -?[0-9.e+-]+", line) for line in lines), lines
    values = dict(line.split(" ") for line in lines)
    assert float(values["pypi_proxy_requests"]) >= 2
    assert float(values["pypi_proxy_files_misses"]) == 1
    assert float(values["pypi_proxy_cache_files"]) == 1


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
