"""A page record this version cannot use (an older layout, or bytes that do not unpickle) is
fetched again online and reported offline: never a 500, and the server stays up."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import httpx

from proxy.models import PageRecord
from proxy.settings import Settings
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _cache_page(settings: Settings, upstream: FakeUpstream, project: str) -> None:
    upstream.add_dist(project, make_wheel(project, "1.0"))
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(f"{proxy.url}/simple/{project}/", headers=JSON).status_code == 200


def _age_record(cache_dir: Path, project: str) -> None:
    """Rewrite the stored record as an older version would have left it: a field missing."""
    storage = Storage(cache_dir)
    try:
        record = storage.index.get("page:" + project)
        assert isinstance(record, PageRecord)
        del record.allowed_hosts  # a slot an older layout did not have
        storage.index.set("page:" + project, record)
    finally:
        storage.close()


def _garble_record(cache_dir: Path, project: str) -> None:
    """Replace the stored record's pickle with bytes that do not unpickle."""
    storage = Storage(cache_dir)
    try:
        storage.index.set("page:" + project, {"placeholder": True})
        garbage = pickle.dumps({"x": 1})[:-3] + b"\x00\x01\x02"
        storage.index._sql(
            "UPDATE Cache SET value = ?, mode = 4 WHERE key = ?", (garbage, "page:" + project)
        )
    finally:
        storage.close()


def test_old_record__fetched_again_online(settings: Settings, upstream: FakeUpstream) -> None:
    _cache_page(settings, upstream, "aged")
    _age_record(settings.cache_dir, "aged")
    _cache_page(settings, upstream, "garbled")
    _garble_record(settings.cache_dir, "garbled")
    with ThreadedProxy(dataclasses.replace(settings, index_ttl=3600.0)) as proxy:
        for project in ("aged", "garbled"):
            answer = httpx.get(f"{proxy.url}/simple/{project}/", headers=JSON)
            assert answer.status_code == 200, answer.text
            assert answer.json()["files"][0]["filename"] == f"{project}-1.0-py3-none-any.whl"
    storage = Storage(settings.cache_dir)
    try:  # the unusable record was replaced by a good one
        assert storage.load_page("aged") is not None
        assert storage.load_page("garbled") is not None
    finally:
        storage.close()


def test_old_record__reported_offline_not_a_500(settings: Settings, upstream: FakeUpstream) -> None:
    _cache_page(settings, upstream, "aged")
    _cache_page(settings, upstream, "fine")
    _age_record(settings.cache_dir, "aged")
    offline = dataclasses.replace(settings, offline=True)
    with ThreadedProxy(offline) as proxy:
        page = httpx.get(f"{proxy.url}/simple/aged/", headers=JSON)
        wheel = httpx.get(f"{proxy.url}/files/aged/aged-1.0-py3-none-any.whl")
        other = httpx.get(f"{proxy.url}/simple/fine/", headers=JSON)
    assert page.status_code == 503, page.text
    assert "format this version cannot read" in page.text
    assert wheel.status_code == 503, wheel.text
    assert other.status_code == 200
