from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


def get(proxy: ThreadedProxy, path: str, **headers: str) -> httpx.Response:
    return httpx.get(proxy.url + path, headers=headers, timeout=10)


def test_project_page__json_for_pip(proxy: ThreadedProxy) -> None:
    response = get(proxy, "/simple/demo/", accept=PIP_ACCEPT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    assert response.headers["etag"]
    data = response.json()
    assert data["name"] == "demo"
    assert data["versions"] == ["1.0", "2.0"]
    urls = [f["url"] for f in data["files"]]
    assert urls == [
        "../../files/demo/demo-1.0-py3-none-any.whl",
        "../../files/demo/demo-2.0-py3-none-any.whl",
    ]
    assert all(f["hashes"]["sha256"] and f["core-metadata"]["sha256"] for f in data["files"])
    assert b"dist-info-metadata" not in response.content


def test_project_page__html_by_default(proxy: ThreadedProxy) -> None:
    response = get(proxy, "/simple/demo/")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert b'href="../../files/demo/demo-1.0-py3-none-any.whl#sha256=' in response.content
    assert b"data-core-metadata=" in response.content
    html_v1 = get(proxy, "/simple/demo/", accept="application/vnd.pypi.simple.v1+html")
    assert html_v1.headers["content-type"] == "application/vnd.pypi.simple.v1+html"
    by_query = get(proxy, "/simple/demo/?format=application/vnd.pypi.simple.latest%2Bjson")
    assert by_query.headers["content-type"] == "application/vnd.pypi.simple.v1+json"


def test_project_page__406_when_nothing_fits(proxy: ThreadedProxy) -> None:
    response = get(proxy, "/simple/demo/", accept="application/json")
    assert response.status_code == 406
    assert "vnd.pypi.simple" in response.text


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Demo/", "/simple/demo/"),
        ("/simple/demo", "/simple/demo/"),
        ("/simple/DEMO", "/simple/demo/"),
        ("/simple", "/simple/"),
        ("/simple/Demo/?format=text/html", "/simple/demo/?format=text/html"),
    ],
)
def test_redirects__non_normalized_names(proxy: ThreadedProxy, path: str, location: str) -> None:
    response = get(proxy, path)
    assert response.status_code == 301
    assert response.headers["location"].endswith(location)


def test_invalid_name__400(proxy: ThreadedProxy) -> None:
    assert get(proxy, "/simple/-bad-/").status_code == 400
    assert get(proxy, "/simple/" + "a" * 300 + "/").status_code == 400


def test_etag__304_and_gzip(proxy: ThreadedProxy) -> None:
    first = get(proxy, "/simple/demo/", accept=PIP_ACCEPT)
    again = get(
        proxy, "/simple/demo/", accept=PIP_ACCEPT, **{"if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.headers["etag"] == first.headers["etag"]
    raw = httpx.get(
        proxy.url + "/simple/demo/",
        headers={"accept": PIP_ACCEPT, "accept-encoding": "gzip"},
    )
    assert raw.headers["content-encoding"] == "gzip"
    assert json.loads(raw.content) == first.json()  # httpx decodes; the bytes were gzip
    plain = httpx.get(proxy.url + "/simple/demo/", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert gzip.compress(b"") and plain.content.startswith(b"<!DOCTYPE html>")


def test_cache__second_request_does_not_reach_upstream(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    get(proxy, "/simple/demo/", accept=PIP_ACCEPT)
    get(proxy, "/simple/demo/")
    assert upstream.count("/simple/demo/") == 1


def test_cache__survives_restart(settings: object, upstream: FakeUpstream) -> None:
    from proxy.settings import Settings

    assert isinstance(settings, Settings)
    with ThreadedProxy(settings) as proxy:
        get(proxy, "/simple/demo/")
    with ThreadedProxy(settings) as proxy:
        assert get(proxy, "/simple/demo/").status_code == 200
    assert upstream.count("/simple/demo/") == 1


def _proxy(tmp_path: Path, fake: FakeUpstream, **overrides: object) -> ThreadedProxy:
    values: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 0,
        "connect_timeout": 1,
        "read_timeout": 2,
    }
    values.update(overrides)
    return ThreadedProxy(load_settings(None, {}, values))


def test_ttl__revalidates_with_if_none_match(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, index_ttl=0) as proxy:
        get(proxy, "/simple/demo/", accept=PIP_ACCEPT)
        upstream.reset_log()
        assert get(proxy, "/simple/demo/", accept=PIP_ACCEPT).status_code == 200
        asked = [r for r in upstream.requests if r.path.startswith("/simple/demo/")]
        assert asked and "if-none-match" in asked[0].headers
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        data = get(proxy, "/simple/demo/", accept=PIP_ACCEPT).json()
        assert data["versions"] == ["1.0", "2.0", "3.0"]


def test_stale__served_when_upstream_down(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, index_ttl=0) as proxy:
        assert get(proxy, "/simple/demo/").status_code == 200
        upstream.down = True
        assert get(proxy, "/simple/demo/").status_code == 200
        missing = get(proxy, "/simple/helper/")
        assert missing.status_code == 502
        upstream.down = False
        upstream.status_override = 503
        assert get(proxy, "/simple/demo/").status_code == 200
        stats = get(proxy, "/stats").json()
        assert stats["pages"]["stale_served"] >= 2
        assert stats["upstream_errors"] >= 2


def test_stale__served_when_upstream_slow(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, index_ttl=0, read_timeout=0.3) as proxy:
        assert get(proxy, "/simple/demo/").status_code == 200
        upstream.delay = 1.0
        started = time.monotonic()
        assert get(proxy, "/simple/demo/").status_code == 200
        assert time.monotonic() - started < 0.9


def test_serial__older_page_never_replaces_newer(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream, index_ttl=0) as proxy:
        first = get(proxy, "/simple/demo/", accept=PIP_ACCEPT).json()
        serial = first["meta"]["_last-serial"]
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        upstream.stale_serial_for["demo"] = serial - 1
        data = get(proxy, "/simple/demo/", accept=PIP_ACCEPT).json()
        assert data["meta"]["_last-serial"] == serial
        assert data["versions"] == ["1.0", "2.0"]


def test_not_found__404_remembered(proxy: ThreadedProxy, upstream: FakeUpstream) -> None:
    assert get(proxy, "/simple/nope/").status_code == 404
    assert get(proxy, "/simple/nope/").status_code == 404
    assert upstream.count("/simple/nope/") == 1


def test_root__json_and_html(proxy: ThreadedProxy) -> None:
    data = get(proxy, "/simple/", accept=PIP_ACCEPT).json()
    assert sorted(p["name"] for p in data["projects"]) == ["demo", "helper"]
    html = get(proxy, "/simple/").text
    assert '<a href="demo/">demo</a>' in html


def test_upstream_html_only__still_json_to_clients(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.html_only = True
    with _proxy(tmp_path, upstream) as proxy:
        data = get(proxy, "/simple/demo/", accept=PIP_ACCEPT).json()
        assert data["versions"] == ["1.0", "2.0"]
        assert data["files"][0]["url"] == "../../files/demo/demo-1.0-py3-none-any.whl"


def test_credentials__never_shown(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.auth = ("mirror", "s3cr3t-token")
    url = upstream.simple_url.replace("http://", "http://mirror:s3cr3t-token@")
    caplog.set_level(logging.DEBUG)
    with _proxy(tmp_path, upstream, upstream=url, index_ttl=0) as proxy:
        assert get(proxy, "/simple/demo/").status_code == 200
        wheel = get(proxy, "/files/demo/demo-1.0-py3-none-any.whl")
        assert wheel.status_code == 200
        upstream.down = True
        get(proxy, "/simple/demo/")
        get(proxy, "/simple/helper/")
        shown = [get(proxy, p).text for p in ("/stats", "/metrics", "/", "/simple/demo/")]
    assert all("s3cr3t" not in text for text in shown)
    assert "s3cr3t" not in caplog.text
