"""The query API: what the cache and the mirror hold, paged and sorted."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from proxy.catalog import SortedViews, list_by_name, list_sorted
from proxy.heldfiles import HeldFile
from proxy.models import JSON_V1, DistFile, PageRecord, ProjectPage
from proxy.render import render_project
from proxy.settings import Settings
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel


def _download(proxy: ThreadedProxy, project: str, filename: str) -> dict[str, object]:
    page = httpx.get(f"{proxy.url}/simple/{project}/", headers={"accept": JSON_V1}).json()
    entry: dict[str, object] = next(f for f in page["files"] if f["filename"] == filename)
    url = httpx.URL(f"{proxy.url}/simple/{project}/").join(str(entry["url"]))
    assert httpx.get(url).status_code == 200
    return entry


def test_api_projects__lists_pages_files_bytes_and_pins(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    upstream.add_dist("big", make_wheel("big", "1.0", payload_size=200_000))
    demo = _download(proxy, "demo", "demo-1.0-py3-none-any.whl")
    _download(proxy, "big", "big-1.0-py3-none-any.whl")
    assert httpx.get(proxy.url + "/simple/helper/").status_code == 200
    sha = str(demo["hashes"]["sha256"])  # type: ignore[index]
    proxy.runtime.mirror.hold("demo", [HeldFile("demo-1.0-py3-none-any.whl", sha, None)])

    listing = httpx.get(proxy.url + "/api/projects")
    assert listing.status_code == 200, listing.text
    rows = {r["name"]: r for r in listing.json()["projects"]}
    assert list(rows) == ["big", "demo", "helper"]
    assert rows["demo"]["listed"] == 2
    assert rows["demo"]["files"] == 1
    assert rows["demo"]["bytes"] == demo["size"]
    assert rows["demo"]["mode"] == "mirror"
    assert rows["demo"]["serial"] == upstream.index.projects["demo"].serial
    assert rows["helper"]["files"] == 0
    assert rows["helper"]["mode"] == "on demand"
    assert rows["helper"]["last_access"] is None
    assert rows["big"]["last_access"] > time.time() - 3600

    by_bytes = httpx.get(proxy.url + "/api/projects?sort=bytes").json()["projects"]
    assert [r["name"] for r in by_bytes] == ["big", "demo", "helper"]
    by_files = httpx.get(proxy.url + "/api/projects?sort=files&limit=2").json()
    assert [r["name"] for r in by_files["projects"]] == ["big", "demo"]
    assert by_files["next"] == "?sort=files&limit=2&page=2"
    second = httpx.get(proxy.url + "/api/projects" + by_files["next"]).json()
    assert [r["name"] for r in second["projects"]] == ["helper"]
    assert "next" not in second

    first = httpx.get(proxy.url + "/api/projects?limit=2").json()
    assert [r["name"] for r in first["projects"]] == ["big", "demo"]
    rest = httpx.get(proxy.url + "/api/projects" + first["next"]).json()
    assert [r["name"] for r in rest["projects"]] == ["helper"]
    paged = httpx.get(proxy.url + "/api/projects?limit=1&page=2").json()
    assert [r["name"] for r in paged["projects"]] == ["demo"]


def test_api_project__files_with_hash_size_pin_and_whether_held(
    proxy: ThreadedProxy, upstream: FakeUpstream
) -> None:
    entry = _download(proxy, "demo", "demo-2.0-py3-none-any.whl")
    detail = httpx.get(proxy.url + "/api/projects/Demo")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["name"] == "demo"
    assert body["stored_files"] == body["held_files"] == 1
    files = {f["filename"]: f for f in body["files"]}
    held = files["demo-2.0-py3-none-any.whl"]
    assert held == {
        "filename": "demo-2.0-py3-none-any.whl",
        "sha256": entry["hashes"]["sha256"],  # type: ignore[index]
        "size": entry["size"],
        "stored": True,
        "held": True,
        "pinned": False,
        "last_access": held["last_access"],
    }
    assert held["last_access"] > time.time() - 3600
    assert files["demo-1.0-py3-none-any.whl"]["stored"] is False
    assert files["demo-1.0-py3-none-any.whl"]["last_access"] is None
    assert httpx.get(proxy.url + "/api/projects/never-asked").status_code == 404
    assert httpx.get(proxy.url + "/api/projects/bad%20name").status_code == 400


@pytest.mark.parametrize(
    "query",
    ["sort=size", "limit=0", "limit=5000", "limit=x", "page=0", "sort=bytes&after=a", "page=-1"],
)
def test_api_projects__bad_query_is_400(proxy: ThreadedProxy, query: str) -> None:
    answer = httpx.get(f"{proxy.url}/api/projects?{query}")
    assert answer.status_code == 400, answer.text
    assert httpx.get(proxy.url + "/health").status_code == 200


def test_api_projects__needs_client_auth_like_the_pages(settings: Settings) -> None:
    with ThreadedProxy(dataclasses.replace(settings, auth_tokens=("tok-1",))) as proxy:
        assert httpx.get(proxy.url + "/api/projects").status_code == 401
        ok = httpx.get(proxy.url + "/api/projects", headers={"authorization": "Bearer tok-1"})
        assert ok.status_code == 200


def _fill(storage: Storage, count: int) -> None:
    files = (DistFile("x-1.0.tar.gz", "https://files.invalid/x-1.0.tar.gz", size=10),)
    for i in range(count):
        page = ProjectPage(name=f"p{i:05d}", files=files)
        record = PageRecord(f"p{i:05d}", page, render_project(page, f"p{i:05d}"), time.time())
        storage.save_page(record)


def test_catalog__pages_through_many_projects_in_bounded_memory(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "cache")
    try:
        _fill(storage, 1500)
        storage.index.set("pin:" + "0" * 64, True)  # keys after page: are never taken for pages
        first = list_by_name(storage, "", 100)
        assert [r.name for r in first] == [f"p{i:05d}" for i in range(100)]
        after = list_by_name(storage, "p01399", 500)
        assert [r.name for r in after] == [f"p{i:05d}" for i in range(1400, 1500)]
        assert list_by_name(storage, "p01499", 10) == []
        rows = list_sorted(storage, "name", 1490, 20)
        assert [r.name for r in rows] == [f"p{i:05d}" for i in range(1490, 1500)]
        tracemalloc.start()
        try:
            rows = list_sorted(storage, "bytes", 0, 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(rows) == 10
        # Every one of 1,500 pages is read, one at a time: nowhere near 1,500 records at once.
        assert peak < 2_000_000, peak
    finally:
        storage.close()


def test_sorted_views__one_read_serves_every_page_until_max_age(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "cache")
    now = [0.0]
    try:
        _fill(storage, 30)
        views = SortedViews(storage, 30.0, clock=lambda: now[0])
        first, as_of = views.rows("files", 0, 20)
        assert len(first) == 20
        assert as_of > time.time() - 60
        storage.delete_page("p00000")
        kept, _ = views.rows("files", 20, 20)
        assert len(kept) == 10  # the read before the delete, paged on
        now[0] = 31.0
        fresh, _ = views.rows("files", 20, 20)
        assert len(fresh) == 9
    finally:
        storage.close()
