"""Pages are never lost or replaced by a bad answer, and every worker serves what the cache
holds now (issue 7, cases 2, 3, 6 and 9), driven through the real server and the fake upstream."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from proxy.models import DistFile, PageRecord
from proxy.render import render_project
from proxy.settings import Settings, load_settings
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import stored
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy
from tests.support.wheels import make_wheel
from tests.test_prefetch_e2e import prefetch_command

JSON = "application/vnd.pypi.simple.v1+json"
WHEEL = "demo-1.0-py3-none-any.whl"
# 267 bytes of UTF-8 in 140 characters: within a character limit, over the file system's.
LONG_NAME = "demo-" + "\u00e9" * 127 + "x.tar.gz"


def configure(tmp_path: Path, fake: FakeUpstream, **values: object) -> Settings:
    base: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 0,
        "connect_timeout": 2,
        "read_timeout": 5,
        "breaker_threshold": 0,
    }
    base.update(values)
    return load_settings(None, {}, base)


def filenames(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [f["filename"] for f in response.json()["files"]]


def page(url: str, project: str = "demo") -> httpx.Response:
    return httpx.get(f"{url}/simple/{project}/", headers={"accept": JSON}, timeout=10)


# -- case 2: one 404 never takes a stored page -------------------------------------------------


def test_one_404__stored_page_served_and_kept(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream, index_ttl=0)
    with ThreadedProxy(settings) as proxy:
        before = filenames(page(proxy.url))
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
        upstream.not_found_once.add("demo")
        assert filenames(page(proxy.url)) == before  # the 404 answer: stale, not a 404
        assert "demo" not in upstream.not_found_once  # the upstream was asked, and said 404
        assert filenames(page(proxy.url)) == before
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
    upstream.stop()
    offline = configure(tmp_path, upstream, offline=True)
    with ThreadedProxy(offline) as proxy:
        assert filenames(page(proxy.url)) == [WHEEL]


def test_404_without_stored_page__still_a_404(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ThreadedProxy(configure(tmp_path, upstream, index_ttl=0)) as proxy:
        assert page(proxy.url, "nothing-here").status_code == 404
        assert page(proxy.url, "nothing-here").status_code == 404  # remembered: not asked again
        assert upstream.count("/simple/nothing-here/") == 1


# -- case 3: a 200 that is not a real page replaces nothing ------------------------------------


def test_maintenance_page__stored_page_and_files_kept(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, index_ttl=0)
    with ThreadedProxy(settings) as proxy:
        before = filenames(page(proxy.url))
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
        upstream.maintenance = True
        for _ in range(3):
            assert filenames(page(proxy.url)) == before
        upstream.reset_log()
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
        html = httpx.get(f"{proxy.url}/simple/demo/")
        assert WHEEL in html.text
        assert httpx.get(proxy.url + "/stats").json()["pages_distrusted"] >= 3
        upstream.maintenance = False
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        assert "demo-3.0-py3-none-any.whl" in filenames(page(proxy.url))


def test_serial_less_html_page__does_not_replace_a_serial_page(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Even with its links intact, a page with no serial cannot vouch for being newer."""
    with ThreadedProxy(configure(tmp_path, upstream, index_ttl=0)) as proxy:
        serial = page(proxy.url).json()["meta"]["_last-serial"]
        assert serial == upstream.index.existing("demo").serial
        upstream.html_only = upstream.no_serial = True
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        again = page(proxy.url)
        assert again.json()["meta"]["_last-serial"] == serial
        assert "demo-3.0-py3-none-any.whl" not in filenames(again)
        upstream.no_serial = False  # with its serial, the new page is taken
        assert "demo-3.0-py3-none-any.whl" in filenames(page(proxy.url))


# -- case 6: one bad entry does not break a page -----------------------------------------------


@pytest.mark.parametrize("html_only", [False, True], ids=["json", "html"])
def test_bad_entries__dropped_counted_rest_served_online_and_offline(
    tmp_path: Path, upstream: FakeUpstream, html_only: bool
) -> None:
    upstream.html_only = html_only
    upstream.add_odd_entry("demo", "demo-9.0.tar.gz", "not-a-hash")
    upstream.add_odd_entry("demo", LONG_NAME, "c" * 64)
    assert len(LONG_NAME.encode()) == 267
    settings = configure(tmp_path, upstream)
    with ThreadedProxy(settings) as proxy:
        listed = filenames(page(proxy.url))
        assert listed == [WHEEL, "demo-2.0-py3-none-any.whl"]
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
        for name in ("demo-9.0.tar.gz", LONG_NAME):
            assert httpx.get(f"{proxy.url}/files/demo/{name}").status_code in (400, 404), name
        assert httpx.get(proxy.url + "/stats").json()["entries_dropped"] == 2
        assert httpx.get(proxy.url + "/health").status_code == 200
    upstream.stop()
    with ThreadedProxy(configure(tmp_path, upstream, offline=True)) as proxy:
        assert filenames(page(proxy.url)) == [WHEEL]
        assert WHEEL in httpx.get(f"{proxy.url}/simple/demo/").text
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200


# -- case 9: every worker serves what the cache holds now --------------------------------------


def spread_get(url: str, times: int) -> list[list[str]]:
    """Page listings over fresh connections, so that both workers answer some."""
    seen = []
    for _ in range(times):
        with httpx.Client(timeout=10) as client:
            seen.append(filenames(client.get(url + "/simple/demo/", headers={"accept": JSON})))
    return seen


@pytest.mark.e2e
def test_forget_on_one_worker__every_worker_serves_the_new_page(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    token = {"x-admin-token": "s3cret"}
    with SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        "--workers",
        "2",
        "--admin-token",
        "s3cret",
        cache_dir=tmp_path / "cache",
    ) as proxy:
        for listing in spread_get(proxy.url, 20):  # both workers hold the page in memory
            assert "demo-3.0-py3-none-any.whl" not in listing
        upstream.add_dist("demo", make_wheel("demo", "3.0"))
        forgot = httpx.post(proxy.url + "/admin/forget/demo", headers=token)
        assert forgot.status_code == 200
        time.sleep(1.5)
        for listing in spread_get(proxy.url, 20):
            assert "demo-3.0-py3-none-any.whl" in listing, proxy.log()


@pytest.mark.e2e
def test_prefetch_beside_offline_serve__new_files_listed_without_restart(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    cache = tmp_path / "cache"
    with ThreadedProxy(configure(tmp_path, upstream)) as proxy:  # one file cached on demand
        assert page(proxy.url).status_code == 200
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
    with SubprocessProxy("--offline", "--workers", "2", cache_dir=cache) as proxy:
        for listing in spread_get(proxy.url, 10):
            assert listing == [WHEEL]
        done = subprocess.run(
            prefetch_command(upstream, cache, "--project", "demo"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "demo-2.0-py3-none-any.whl" in stored(cache)
        time.sleep(1.5)
        for listing in spread_get(proxy.url, 10):
            assert listing == [WHEEL, "demo-2.0-py3-none-any.whl"], proxy.log()


def test_record_stored_with_bad_entries__offline_page_and_files_still_served(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A record an older version stored, bad entries and all, is served without them."""
    settings = configure(tmp_path, upstream)
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
    storage = Storage(settings.cache_dir)
    try:
        record = storage.load_page("demo")
        assert record is not None
        bad = (
            DistFile("demo-9.0.tar.gz", upstream.base_url + "/x", {"sha256": "not-a-hash"}),
            DistFile(LONG_NAME, upstream.base_url + "/y", {"sha256": "c" * 64}),
        )
        odd = dataclasses.replace(record.page, files=record.page.files + bad)
        storage.save_page(PageRecord("demo", odd, render_project(odd, "demo"), record.fetched_at))
    finally:
        storage.close()
    upstream.stop()
    with ThreadedProxy(configure(tmp_path, upstream, offline=True)) as proxy:
        assert filenames(page(proxy.url)) == [WHEEL]
        assert httpx.get(f"{proxy.url}/files/demo/{WHEEL}").status_code == 200
        for name in ("demo-9.0.tar.gz", LONG_NAME):
            assert httpx.get(f"{proxy.url}/files/demo/{name}").status_code in (400, 404), name


def test_maintenance_root__stored_root_kept(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ThreadedProxy(configure(tmp_path, upstream, index_ttl=0)) as proxy:
        before = httpx.get(proxy.url + "/simple/", headers={"accept": JSON}).json()["projects"]
        assert {p["name"] for p in before} == {"demo", "helper"}
        upstream.maintenance_root = True
        after = httpx.get(proxy.url + "/simple/", headers={"accept": JSON}).json()["projects"]
        assert after == before


def test_maintenance_page__upstream_asked_again_only_after_negative_ttl(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, index_ttl=0.5, negative_ttl=30)
    with ThreadedProxy(settings) as proxy:
        before = filenames(page(proxy.url))
        time.sleep(0.6)
        upstream.maintenance = True
        upstream.reset_log()
        for _ in range(5):
            assert filenames(page(proxy.url)) == before
        assert upstream.count("/simple/demo/") == 1
