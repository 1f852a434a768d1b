"""The legacy JSON API as a mirror of this proxy needs it (issue 12): made from the stored page
when no usable upstream document exists, never older than the page, and offering the
``.metadata`` the page offers."""

from __future__ import annotations

import dataclasses
import json
import time
from urllib.parse import quote

import httpx
import pytest

from proxy.generations import CHECK_EVERY
from proxy.jsonapi import rewrite
from proxy.jsonsynth import synthesise
from proxy.models import DistFile, PageRecord, ProjectPage
from proxy.render import render_project
from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.prefetching import run_pass
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_M = "c" * 64


def _page(*files: DistFile, serial: int | None = 7) -> PageRecord:
    page = ProjectPage(name="demo", files=files, serial=serial)
    return PageRecord("demo", page, render_project(page, "demo"), 0.0)


def _doc(page: PageRecord, version: str | None = None, sizes: dict[str, int] | None = None) -> dict:  # type: ignore[type-arg]
    template, token = synthesise(page, version, (sizes or {}).get)
    return json.loads(template.replace(token, b"http://p/"))  # type: ignore[no-any-return]


def test_synthesise__releases_latest_unyanked_and_what_a_mirror_cannot_use_left_out() -> None:
    page = _page(
        DistFile(
            "demo-1.0-py3-none-any.whl",
            "u",
            {"sha256": SHA_A},
            size=10,
            upload_time="2024-01-01T00:00:00.000000Z",
            core_metadata={"sha256": SHA_M},
            requires_python=">=3.8",
        ),
        DistFile("demo-2.0.tar.gz", "u", {"sha256": SHA_B}, yanked="broken"),  # size: held copy
        DistFile("demo-3.0.tar.gz", "u", {"md5": "x"}, size=3),  # no sha256
        DistFile("demo-4.0.tar.gz", "u", {"sha256": "d" * 64}),  # no size known anywhere
        DistFile("not a dist", "u", {"sha256": "e" * 64}, size=1),  # no version
    )
    doc = _doc(page, sizes={SHA_B: 20})
    assert doc["last_serial"] == 7
    assert sorted(doc["releases"]) == ["1.0", "2.0"]
    assert doc["info"]["version"] == "1.0"  # 2.0 is wholly yanked
    one = doc["releases"]["1.0"][0]
    assert one["url"] == f"http://p/packages/aa/aa/{'a' * 60}/demo-1.0-py3-none-any.whl"
    assert one["digests"] == {"sha256": SHA_A}
    assert one["size"] == 10 and one["upload_time_iso_8601"] == "2024-01-01T00:00:00.000000Z"
    assert one["core-metadata"] == {"sha256": SHA_M}
    assert one["requires_python"] == ">=3.8" and one["packagetype"] == "bdist_wheel"
    two = doc["releases"]["2.0"][0]
    assert two["size"] == 20 and two["yanked"] is True and two["yanked_reason"] == "broken"
    assert two["packagetype"] == "sdist" and two["core-metadata"] is False
    assert doc["urls"] == doc["releases"]["1.0"]


def test_synthesise__version_document_and_unknown_version() -> None:
    page = _page(
        DistFile("demo-1.0.tar.gz", "u", {"sha256": SHA_A}, size=1),
        DistFile("demo-2.0.tar.gz", "u", {"sha256": SHA_B}, size=2),
    )
    doc = _doc(page, "1.0")
    assert doc["info"]["version"] == "1.0" and "releases" not in doc
    assert [f["filename"] for f in doc["urls"]] == ["demo-1.0.tar.gz"]
    with pytest.raises(KeyError):
        synthesise(page, "9.9", lambda _: None)


def test_synthesise__hostile_filenames_stay_one_path_component_and_json() -> None:
    odd = 'de"}<\u2028%2F..mo-1.0.tar.gz'
    page = _page(DistFile(odd, "u", {"sha256": SHA_A}, size=1))
    template, token = synthesise(page, None, lambda _: None)
    assert template.count(token) == 2  # urls and releases: nothing else carries the token
    doc = json.loads(template.replace(token, b"http://p/"))
    url = doc["urls"][0]["url"]
    assert url == f"http://p/packages/aa/aa/{'a' * 60}/" + quote(odd, safe="")
    assert doc["urls"][0]["filename"] == odd


def test_rewrite__adds_the_pages_core_metadata_when_the_upstream_json_has_none() -> None:
    page = _page(
        DistFile("demo-1.0.tar.gz", "u", {"sha256": SHA_A}, core_metadata={"sha256": SHA_M}),
        DistFile("demo-2.0.tar.gz", "u", {"sha256": SHA_B}),
    )
    body = json.dumps(
        {
            "info": {},
            "urls": [{"filename": "demo-2.0.tar.gz", "digests": {"sha256": SHA_B}}],
            "releases": {
                "1.0": [{"filename": "demo-1.0.tar.gz", "digests": {"sha256": SHA_A}}],
                "0.1": [{"filename": "demo-0.1.tar.gz", "core-metadata": {"sha256": "up"}}],
            },
        }
    ).encode()
    template, token, _ = rewrite(body, page)
    doc = json.loads(template.replace(token, b"http://p/"))
    assert doc["releases"]["1.0"][0]["core-metadata"] == {"sha256": SHA_M}
    assert "core-metadata" not in doc["urls"][0]  # the page offers none
    assert doc["releases"]["0.1"][0]["core-metadata"] == {"sha256": "up"}  # the upstream's kept


def test_json_api__offline_made_from_the_page_at_its_serial(
    settings: Settings, upstream: FakeUpstream
) -> None:
    assert run_pass(settings).ok  # pages and files, no JSON documents
    with ThreadedProxy(dataclasses.replace(settings, offline=True)) as proxy:
        answer = httpx.get(proxy.url + "/pypi/demo/json")
        assert answer.status_code == 200, answer.text
        serial = upstream.index.projects["demo"].serial
        assert answer.headers["x-pypi-last-serial"] == str(serial)
        doc = answer.json()
        assert doc["last_serial"] == serial and sorted(doc["releases"]) == ["1.0", "2.0"]
        for item in doc["urls"]:
            got = httpx.get(item["url"])
            assert got.status_code == 200 and len(got.content) == item["size"]
            assert httpx.get(item["url"] + ".metadata").status_code == 200
        assert httpx.get(proxy.url + "/pypi/demo/1.0/json").json()["info"]["version"] == "1.0"
        missing = httpx.get(proxy.url + "/pypi/demo/9.9/json")
        assert missing.status_code == 404, missing.text


def test_json_api__upstream_without_a_json_api__made_from_the_page(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    upstream.raw_routes["/pypi/demo/json"] = RawAnswer(status=404, body=b"no such API\n")
    answer = httpx.get(proxy.url + "/pypi/demo/json")
    assert answer.status_code == 200, answer.text
    assert answer.json()["last_serial"] == upstream.index.projects["demo"].serial
    # A project the upstream does not have is still a 404.
    assert httpx.get(proxy.url + "/pypi/nothing-here/json").status_code == 404


def test_json_api__a_stored_document_older_than_the_page_is_not_served(
    settings: Settings, upstream: FakeUpstream
) -> None:
    with ThreadedProxy(settings) as proxy:  # index_ttl 600 s: the first document stays fresh
        first = httpx.get(proxy.url + "/pypi/demo/json")
        assert first.status_code == 200
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        assert run_pass(settings).ok  # a pass stores the newer page, not the JSON
        time.sleep(CHECK_EVERY + 0.1)
        second = httpx.get(proxy.url + "/pypi/demo/json")
        serial = upstream.index.projects["demo"].serial
        assert second.headers["x-pypi-last-serial"] == str(serial), second.headers
        assert "3.0" in second.json()["releases"]
    # Offline, a stored document older than the page gives way to the page's.
    upstream.add_dist("demo", make_wheel("demo", "4.0"))
    assert run_pass(settings).ok
    with ThreadedProxy(dataclasses.replace(settings, offline=True)) as proxy:
        third = httpx.get(proxy.url + "/pypi/demo/json")
        assert "4.0" in third.json()["releases"], third.text
        assert third.headers["x-pypi-last-serial"] == str(upstream.index.projects["demo"].serial)
