"""The legacy JSON API: cached, revalidated, offline, its file URLs under the proxy."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import httpx
import pytest

from proxy.jsonapi import rewrite, upstream_url
from proxy.models import DistFile, PageRecord, ProjectPage
from proxy.render import render_project
from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy


def _json_requests(upstream: FakeUpstream, path: str) -> list[dict[str, str]]:
    return [r.headers for r in upstream.requests if r.path.split("?")[0] == path]


def _file_urls(doc: dict[str, object]) -> list[str]:
    urls = [f["url"] for f in doc["urls"]]  # type: ignore[attr-defined]
    for files in doc.get("releases", {}).values():  # type: ignore[attr-defined]
        urls += [f["url"] for f in files]
    return urls


def test_json_api__file_urls_under_the_proxy_and_downloadable(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    answer = httpx.get(proxy.url + "/pypi/demo/json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-pypi-last-serial"] == str(upstream.index.projects["demo"].serial)
    doc = answer.json()
    assert doc["info"]["version"] == "2.0"
    assert sorted(doc["releases"]) == ["1.0", "2.0"]
    urls = _file_urls(doc)
    assert len(urls) == 3
    # The /packages/ layout, from each file's sha256, as mirroring tools expect.
    for item in [*doc["urls"], *(f for fs in doc["releases"].values() for f in fs)]:
        sha = item["digests"]["sha256"]
        expected = f"/packages/{sha[:2]}/{sha[2:4]}/{sha[4:]}/{item['filename']}"
        assert item["url"] == proxy.url + expected, item["url"]
    latest = doc["urls"][0]
    got = httpx.get(latest["url"])
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == latest["digests"]["sha256"]
    # The simple page was fetched (or known) so that those URLs are served.
    assert proxy.runtime.storage.has_page("demo")


def test_json_api__version_document(proxy: ThreadedProxy, upstream: FakeUpstream) -> None:
    answer = httpx.get(proxy.url + "/pypi/demo/1.0/json")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["info"]["version"] == "1.0"
    assert [f["filename"] for f in doc["urls"]] == ["demo-1.0-py3-none-any.whl"]
    assert doc["urls"][0]["url"].endswith("/demo-1.0-py3-none-any.whl")
    assert doc["urls"][0]["url"].startswith(proxy.url + "/packages/")
    assert httpx.get(proxy.url + "/pypi/demo/7.7/json").status_code == 404
    assert httpx.get(proxy.url + "/pypi/demo/bad%20version/json").status_code == 400


def test_json_api__cached_etag_and_304(proxy: ThreadedProxy, upstream: FakeUpstream) -> None:
    first = httpx.get(proxy.url + "/pypi/demo/json")
    assert first.status_code == 200
    etag = first.headers["etag"]
    again = httpx.get(proxy.url + "/pypi/demo/json", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.headers["x-pypi-last-serial"] == first.headers["x-pypi-last-serial"]
    gz = httpx.get(proxy.url + "/pypi/demo/json", headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert gz.json() == first.json()
    # Fresh in the cache: the upstream was asked once.
    assert len(_json_requests(upstream, "/pypi/demo/json")) == 1


def test_json_api__revalidated_with_the_upstream_etag(
    settings: Settings, upstream: FakeUpstream
) -> None:
    with ThreadedProxy(dataclasses.replace(settings, index_ttl=0.0)) as proxy:
        first = httpx.get(proxy.url + "/pypi/demo/json")
        second = httpx.get(proxy.url + "/pypi/demo/json")
        assert first.status_code == second.status_code == 200
        assert second.json() == first.json()
        asked = _json_requests(upstream, "/pypi/demo/json")
        assert len(asked) == 2
        assert "if-none-match" not in asked[0]
        assert asked[1]["if-none-match"]  # answered 304 by the fake when unchanged


def test_json_api__served_offline_and_stale(settings: Settings, upstream: FakeUpstream) -> None:
    with ThreadedProxy(dataclasses.replace(settings, index_ttl=0.0)) as proxy:
        online = httpx.get(proxy.url + "/pypi/demo/json")
        assert online.status_code == 200
        upstream.down = True
        stale = httpx.get(proxy.url + "/pypi/demo/json")
        assert stale.status_code == 200
        assert stale.json() == online.json()
        assert httpx.get(proxy.url + "/pypi/helper/json").status_code == 502
    offline = dataclasses.replace(settings, offline=True)
    with ThreadedProxy(offline) as proxy:
        doc = httpx.get(proxy.url + "/pypi/demo/json")
        assert doc.status_code == 200
        assert doc.json()["info"] == online.json()["info"]
        assert all(u.startswith(proxy.url + "/packages/") for u in _file_urls(doc.json()))
        missing = httpx.get(proxy.url + "/pypi/helper/json")
        assert missing.status_code == 404
        assert "offline" in missing.text


def test_json_api__odd_names_redirect_and_unknown_is_404(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    moved = httpx.get(proxy.url + "/pypi/Demo/json")
    assert moved.status_code == 301
    assert moved.headers["location"] == "/pypi/demo/json"
    assert httpx.get(proxy.url + "/pypi/no-such/json").status_code == 404
    assert httpx.get(proxy.url + "/pypi/bad%20name/json").status_code == 400


def test_json_api__answer_over_the_page_cap_is_refused(
    settings: Settings, upstream: FakeUpstream
) -> None:
    big = b'{"info": {}, "urls": [], "pad": "' + b"x" * 300_000 + b'"}'
    upstream.raw["/pypi/demo/json"] = ("application/json", big)
    with ThreadedProxy(dataclasses.replace(settings, max_page_size=100_000)) as proxy:
        answer = httpx.get(proxy.url + "/pypi/demo/json")
        assert answer.status_code == 502, answer.text
        assert "max_page_size" in answer.text
        assert httpx.get(proxy.url + "/health").status_code == 200


def test_json_api__not_a_document_is_502(settings: Settings, upstream: FakeUpstream) -> None:
    upstream.raw["/pypi/demo/json"] = ("application/json", b"[1, 2]")
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(proxy.url + "/pypi/demo/json").status_code == 502


def _page(*files: DistFile) -> PageRecord:
    page = ProjectPage(name="demo", files=files)
    return PageRecord("demo", page, render_project(page, "demo"), 0.0)


SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.mark.parametrize("pad", ["", "0123456789abcdef" * 4])
def test_rewrite__token_never_in_upstream_text_and_variants_kept(pad: str) -> None:
    page = _page(
        DistFile("demo-1.0.tar.gz", "https://u.invalid/a", {"sha256": SHA_A}),
        DistFile("demo-1.0.tar.gz", "https://u.invalid/b", {"sha256": SHA_B}),
    )
    body = json.dumps(
        {
            "info": {"summary": pad},
            "urls": [{"filename": "demo-1.0.tar.gz", "digests": {"sha256": SHA_B}, "url": "x"}],
            "releases": {"1.0": [{"filename": "gone.tar.gz", "url": "y"}]},
            "last_serial": "42",
        }
    ).encode()
    template, token, serial = rewrite(body, page)
    assert serial == 42
    assert template.count(token) == 2
    doc = json.loads(template.replace(token, b"http://p/"))
    # Two entries share the filename: the one with this digest, by its sha256 path.
    path = f"{SHA_B[:2]}/{SHA_B[2:4]}/{SHA_B[4:]}"
    assert doc["urls"][0]["url"] == f"http://p/packages/{path}/demo-1.0.tar.gz"
    assert doc["releases"]["1.0"][0]["url"] == "http://p/files/demo/gone.tar.gz"
    assert doc["info"]["summary"] == pad


def test_upstream_url__derived_from_the_upstream_base() -> None:
    assert upstream_url("http://h:1/x", "demo", None) == "http://h:1/x/pypi/demo/json"
    assert upstream_url("http://h:1", "demo", "1.0+a") == "http://h:1/pypi/demo/1.0%2Ba/json"


def test_rewrite__lone_surrogates_and_odd_filenames_are_kept_safe() -> None:
    body = b'{"info": {"summary": "\\ud800"}, "urls": [{"filename": "../../x", "url": "z"}]}'
    template, token, _ = rewrite(body, _page())
    doc = json.loads(template.replace(token, b"http://p/"))
    assert doc["info"]["summary"] == "\ud800"
    assert doc["urls"][0]["url"] == "http://p/files/demo/..%2F..%2Fx"


def test_packages_layout__serves_listed_files_only(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    doc = httpx.get(proxy.url + "/pypi/demo/json").json()
    item = doc["urls"][0]
    url = item["url"]
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == item["size"]
    got = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert got.status_code == 206 and len(got.content) == 10
    sha = item["digests"]["sha256"]
    other = "0" * 64
    base = proxy.url + "/packages/"
    refused = [
        f"{base}{other[:2]}/{other[2:4]}/{other[4:]}/{item['filename']}",  # not its sha256
        f"{base}{sha[:2]}/{sha[2:4]}/{sha[4:]}/helper-1.5-py3-none-any.whl",  # another file
        f"{base}{sha[:2]}/{sha[2:4]}/{sha[4:-1]}/{item['filename']}",  # too short
        f"{base}{sha[:2]}/{sha[2:4]}/{sha[4:]}/..",
        f"{base}{sha[:2]}/{sha[2:4]}/{sha[4:]}/nameless",
    ]
    for bad in refused:
        answer = httpx.get(bad)
        assert answer.status_code in (400, 404), (bad, answer.status_code)
    assert httpx.get(proxy.url + "/health").status_code == 200
