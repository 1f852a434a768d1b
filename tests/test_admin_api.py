"""The admin API: prefetch, verify, refresh and delete, on the real server and fake upstream."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefetch.service import prefetch_service
from proxy.heldfiles import HeldFile
from proxy.locks import release_lock, take_lock
from proxy.models import JSON_V1
from proxy.scrub import LAST_KEY
from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import prefetch_lock
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

TOKEN = "adm-789"
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(settings: Settings) -> Iterator[ThreadedProxy]:
    with ThreadedProxy(
        dataclasses.replace(settings, admin_token=TOKEN), [prefetch_service]
    ) as server:
        yield server


def _wait(check: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not callable(check) or not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_admin__every_action_needs_the_token(admin: ThreadedProxy) -> None:
    calls = [
        ("POST", "/admin/prefetch"),
        ("POST", "/admin/verify"),
        ("POST", "/admin/projects/demo/refresh"),
        ("DELETE", "/admin/projects/demo"),
    ]
    for method, path in calls:
        assert httpx.request(method, admin.url + path).status_code == 401, path
        wrong = {"authorization": "Bearer nope"}
        assert httpx.request(method, admin.url + path, headers=wrong).status_code == 401, path


def test_admin_prefetch__202_then_409_with_progress_while_a_pass_runs(
    admin: ThreadedProxy, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.web.admin")
    # Another process's pass (the command) holds the lock: the action must say so.
    path = prefetch_lock(admin.settings.cache_dir)
    fd = take_lock(path)
    assert fd is not None
    try:
        busy = httpx.post(admin.url + "/admin/prefetch", headers=BEARER)
    finally:
        release_lock(path, fd)
    assert busy.status_code == 409, busy.text
    body = busy.json()
    assert body["started"] is False
    assert body["progress"]["state"] == "running"
    assert "queue" in body["progress"]
    started = httpx.post(admin.url + "/admin/prefetch", headers={"x-admin-token": TOKEN})
    assert started.status_code == 202, started.text
    assert started.json() == {"started": True}

    def synced() -> bool:
        prefetch = httpx.get(admin.url + "/stats").json()["prefetch"]
        return bool(prefetch.get("mirror_serial") == upstream.serial)

    _wait(synced, "the pass the action started")
    asked = [r.getMessage() for r in caplog.records if r.name == "proxy.web.admin"]
    assert any("prefetch asked by 127.0.0.1 (bearer)" in m for m in asked), asked
    assert any("prefetch asked by 127.0.0.1 (x-admin-token)" in m for m in asked), asked
    assert not any(TOKEN in m for m in asked)


def test_admin_refresh__fetches_now_and_returns_the_serial(
    admin: ThreadedProxy, upstream: FakeUpstream
) -> None:
    assert httpx.get(admin.url + "/simple/demo/").status_code == 200
    before = upstream.serial
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    assert upstream.serial > before
    # Still fresh in the cache: a page request alone would not show 3.0 yet.
    assert "demo-3.0" not in httpx.get(admin.url + "/simple/demo/").text
    refreshed = httpx.post(admin.url + "/admin/projects/Demo/refresh", headers=BEARER)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["serial"] == upstream.serial
    assert refreshed.json()["project"] == "demo"
    assert "demo-3.0" in httpx.get(admin.url + "/simple/demo/").text
    missing = httpx.post(admin.url + "/admin/projects/no-such/refresh", headers=BEARER)
    assert missing.status_code == 404
    bad = httpx.post(admin.url + "/admin/projects/bad%20name/refresh", headers=BEARER)
    assert bad.status_code == 400


def test_admin_refresh__upstream_down_is_502_and_the_page_stays(
    admin: ThreadedProxy, upstream: FakeUpstream
) -> None:
    assert httpx.get(admin.url + "/simple/demo/").status_code == 200
    upstream.down = True
    refreshed = httpx.post(admin.url + "/admin/projects/demo/refresh", headers=BEARER)
    assert refreshed.status_code == 502
    assert httpx.get(admin.url + "/simple/demo/").status_code == 200


def _held(cache: Path) -> set[str]:
    return {p.name for p in (cache / "files").rglob("*") if p.is_file()}


def test_admin_delete__forgets_the_page_and_unpinned_files_only(
    admin: ThreadedProxy, upstream: FakeUpstream
) -> None:
    page = httpx.get(admin.url + "/simple/demo/", headers={"accept": JSON_V1}).json()
    by_name = {f["filename"]: f for f in page["files"]}
    for name in ("demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"):
        url = httpx.URL(admin.url + "/simple/demo/").join(by_name[name]["url"])
        assert httpx.get(url).status_code == 200
    assert httpx.get(admin.url + "/simple/helper/").status_code == 200
    assert httpx.get(admin.url + "/pypi/demo/1.0/json").status_code == 200
    storage = admin.runtime.storage
    assert storage.load_json("demo/1.0") is not None
    kept = HeldFile(
        "demo-2.0-py3-none-any.whl", by_name["demo-2.0-py3-none-any.whl"]["hashes"]["sha256"], None
    )
    admin.runtime.mirror.hold("demo", [kept])  # as the prefetcher does
    cache = admin.settings.cache_dir
    assert {"demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"} <= _held(cache)
    deleted = httpx.delete(admin.url + "/admin/projects/demo", headers=BEARER)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["files_removed"] == 1
    assert deleted.json()["pinned_kept"] == 1
    held = _held(cache)
    assert "demo-1.0-py3-none-any.whl" not in held
    assert "demo-2.0-py3-none-any.whl" in held
    assert not storage.has_page("demo")
    assert storage.load_json("demo/1.0") is None
    assert storage.has_page("helper")
    assert storage.totals()["files"] == len(held)
    again = httpx.delete(admin.url + "/admin/projects/demo", headers=BEARER)
    assert again.status_code == 404
    never = httpx.delete(admin.url + "/admin/projects/never-seen", headers=BEARER)
    assert never.status_code == 404
    # The page comes back on the next request, as any miss does.
    assert httpx.get(admin.url + "/simple/demo/").status_code == 200


def test_admin_forget__still_works(admin: ThreadedProxy) -> None:
    assert httpx.get(admin.url + "/simple/demo/").status_code == 200
    forgot = httpx.post(admin.url + "/admin/forget/demo", headers=BEARER)
    assert forgot.status_code == 200
    assert forgot.json() == {"forgot": "demo"}
    assert not admin.runtime.storage.has_page("demo")


def test_admin_verify__runs_a_scrub_and_409_while_one_runs(
    admin: ThreadedProxy, upstream: FakeUpstream
) -> None:
    page = httpx.get(admin.url + "/simple/helper/", headers={"accept": JSON_V1})
    url = httpx.URL(admin.url + "/simple/helper/").join(page.json()["files"][0]["url"])
    assert httpx.get(url).status_code == 200
    storage = admin.runtime.storage
    path = storage.state_dir / "scrub.lock"
    fd = take_lock(path)
    assert fd is not None
    try:
        busy = httpx.post(admin.url + "/admin/verify", headers=BEARER)
    finally:
        release_lock(path, fd)
    assert busy.status_code == 409, busy.text
    assert busy.json()["started"] is False
    assert storage.index.get(LAST_KEY) is None
    started = httpx.post(admin.url + "/admin/verify", headers=BEARER)
    assert started.status_code == 202, started.text
    _wait(lambda: storage.index.get(LAST_KEY) is not None, "the scrub's summary")
    summary = storage.index.get(LAST_KEY)
    assert summary["checked"] >= 1
    assert summary["exit_status"] == 0
    assert os.path.exists(admin.settings.cache_dir / "files")
