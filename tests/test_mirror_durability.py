"""The mirror is never lost to a bad answer or a race (issue 7, cases 2, 3, 4 and 5): prefetch
passes against the fake upstream, with the real server beside them where the case needs it."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from proxy.runtime import reading
from proxy.settings import Settings, load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import prefetch_db, run_pass, stored
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

JSON = "application/vnd.pypi.simple.v1+json"
DEMO = ["demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"]


def configure(tmp_path: Path, fake: FakeUpstream, **prefetch: object) -> Settings:
    return load_settings(
        None,
        {},
        {
            "upstream": fake.simple_url,
            "cache_dir": tmp_path / "cache",
            "retries": 0,
            "connect_timeout": 2,
            "read_timeout": 5,
            "breaker_threshold": 0,
            "prefetch": {"workers": 4, "max_attempts": 2, "gone_recheck": 0.2, **prefetch},
        },
    )


def offline_files(settings: Settings, project: str) -> list[str] | None:
    """The files an offline server lists for ``project``; None when it answers 404."""
    with ThreadedProxy(dataclasses.replace(settings, offline=True)) as proxy:
        response = httpx.get(f"{proxy.url}/simple/{project}/", headers={"accept": JSON})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return [f["filename"] for f in response.json()["files"]]


def held_missing(settings: Settings) -> list[str]:
    """Files the mirror's held list names that are not on disk."""
    with reading(settings) as mirror:
        held = [(h.filename, h.sha256) for _p, h in mirror.iter_held()]
    files = settings.cache_dir / "files"
    return [name for name, sha in held if not (files / sha[:2] / sha / name).exists()]


# -- case 2 --------------------------------------------------------------------------------------


def test_one_404_seen_by_serve__mirror_stays_whole(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings, ["demo"]).ok
    with ThreadedProxy(dataclasses.replace(settings, index_ttl=0)) as proxy:
        upstream.not_found_once.add("demo")
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        assert "demo" not in upstream.not_found_once
    again = run_pass(settings, ["demo"])
    assert again.ok, again.errors
    assert offline_files(settings, "demo") == DEMO
    assert held_missing(settings) == []


def test_one_404_during_a_pass__nothing_removed(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream, max_attempts=1)
    assert run_pass(settings).ok
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    upstream.not_found_once.add("demo")
    failed = run_pass(settings)
    assert not failed.ok  # a selected project without its page is not a whole mirror
    assert any("still lists demo" in e for e in failed.errors), failed.errors
    assert set(DEMO) <= set(stored(settings.cache_dir))
    assert offline_files(settings, "demo") == DEMO
    recovered = run_pass(settings)
    assert recovered.ok, recovered.errors
    assert offline_files(settings, "demo") == [*DEMO, "demo-3.0-py3-none-any.whl"]


def test_one_404_with_a_retry__pass_recovers_and_keeps(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, max_attempts=2)
    assert run_pass(settings).ok
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    upstream.not_found_once.add("demo")
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "demo") == [*DEMO, "demo-3.0-py3-none-any.whl"]


def test_project_really_gone__confirmed_by_the_root_listing_and_removed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="per-project", projects=["demo", "helper"])
    assert run_pass(settings).ok
    upstream.remove_project("helper")
    result = run_pass(settings)
    assert result.ok, result.errors
    assert not any(n.startswith("helper") for n in stored(settings.cache_dir))
    assert offline_files(settings, "helper") is None
    assert offline_files(settings, "demo") == DEMO


def test_page_dropped_by_admin__next_pass_restores_it(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = dataclasses.replace(configure(tmp_path, upstream), admin_token="t")
    assert run_pass(settings).ok
    with ThreadedProxy(settings) as proxy:
        forgot = httpx.post(proxy.url + "/admin/forget/demo", headers={"x-admin-token": "t"})
        assert forgot.status_code == 200
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "demo") == DEMO


# -- case 3 --------------------------------------------------------------------------------------


def test_maintenance_page_during_a_pass__fails_and_deletes_nothing(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, max_attempts=1)
    assert run_pass(settings, ["demo"]).ok
    before = stored(settings.cache_dir)
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    upstream.maintenance = True
    failed = run_pass(settings, ["demo"])
    assert not failed.ok
    assert any("SuspectPage" in e for e in failed.errors), failed.errors
    assert stored(settings.cache_dir) == before
    assert offline_files(settings, "demo") == DEMO
    upstream.maintenance = False
    recovered = run_pass(settings, ["demo"])
    assert recovered.ok, recovered.errors
    assert "demo-3.0-py3-none-any.whl" in stored(settings.cache_dir)


# -- case 4 --------------------------------------------------------------------------------------


def test_eviction_under_load_while_prefetching__every_held_file_on_disk(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    for i in range(12):
        upstream.add_dist(f"m{i}", make_wheel(f"m{i}", "1.0", payload_size=150_000))
    loose = [make_wheel(f"loose{i}", "1.0", payload_size=150_000) for i in range(8)]
    for wheel in loose:
        upstream.add_dist(wheel.filename.split("-")[0], wheel)
    mirrored = [f"m{i}" for i in range(12)]
    settings = dataclasses.replace(configure(tmp_path, upstream), max_cache_size=1024**2)
    stop = threading.Event()

    def load(url: str) -> None:  # on-demand misses: every fill over the cap evicts
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=10) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                for wheel in loose:
                    name = wheel.filename.split("-")[0]
                    client.get(f"{url}/files/{name}/{wheel.filename}")

    with ThreadedProxy(settings) as proxy:
        loader = threading.Thread(target=load, args=(proxy.url,), daemon=True)
        loader.start()
        try:
            for round_ in range(3):
                result = run_pass(settings, mirrored)
                assert result.ok, result.errors
                assert held_missing(settings) == [], f"round {round_}"
                upstream.add_dist(f"m{round_}", make_wheel(f"m{round_}", "2.0", payload_size=9))
        finally:
            stop.set()
            loader.join(timeout=30)
    assert not loader.is_alive()


# -- case 5 --------------------------------------------------------------------------------------


def test_file_shared_by_two_projects__kept_while_one_holds_it(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    shared = make_wheel("shared", "1.0")
    upstream.add_dist("a", shared)
    upstream.add_dist("b", shared)
    upstream.add_dist("a", make_wheel("a", "1.0"))
    settings = configure(tmp_path, upstream)
    assert run_pass(settings, ["a", "b"]).ok
    upstream.remove_file("a", shared.filename)
    result = run_pass(settings, ["a", "b"])
    assert result.ok, result.errors
    assert shared.filename in stored(settings.cache_dir)
    assert offline_files(settings, "b") == [shared.filename]
    assert offline_files(settings, "a") == ["a-1.0-py3-none-any.whl"]
    upstream.remove_file("b", shared.filename)  # the last holder lets go: now it goes
    assert run_pass(settings, ["a", "b"]).ok
    assert shared.filename not in stored(settings.cache_dir)


def test_removal_seen_in_the_json_root__removed(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.xmlrpc_refuse = True
    settings = configure(tmp_path, upstream, method="json-root")
    assert run_pass(settings).ok
    upstream.remove_project("helper")
    upstream.reset_log()
    result = run_pass(settings)
    assert result.ok, result.errors
    # The root, then helper's 404 and its second look: confirmed, no root refetch.
    assert upstream.count("/simple/") == 3
    assert not any(n.startswith("helper") for n in stored(settings.cache_dir))
    assert offline_files(settings, "helper") is None


def test_state_from_before_the_gone_column__opens_and_works(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    path = prefetch_db(settings.cache_dir)
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE queue (name TEXT PRIMARY KEY, serial INTEGER, attempts INTEGER)")
    db.execute("INSERT INTO queue (name, serial, attempts) VALUES ('demo', NULL, 0)")
    db.commit()
    db.close()
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "demo") == DEMO


def test_shared_file_moves_between_projects__never_lost(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """One project drops a file while others take it up, in the same pass, again and again:
    the removal and the new holders' syncs run side by side."""
    shared = make_wheel("shared", "1.0", payload_size=50_000)
    names = [f"s{i}" for i in range(6)]
    for name in names:
        upstream.add_dist(name, make_wheel(name, "1.0"))
    upstream.add_dist(names[0], shared)
    settings = configure(tmp_path, upstream, workers=6)
    assert run_pass(settings, names).ok
    holder = names[0]
    for round_ in range(6):
        taker = names[(round_ + 1) % len(names)]
        upstream.add_dist(taker, shared)
        upstream.remove_file(holder, shared.filename)
        result = run_pass(settings, names)
        assert result.ok, (round_, result.errors)
        assert shared.filename in stored(settings.cache_dir), round_
        assert held_missing(settings) == [], round_
        holder = taker


def test_404_while_the_root_is_a_maintenance_page__nothing_removed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(
        tmp_path, upstream, method="per-project", projects=["demo", "helper"], max_attempts=1
    )
    assert run_pass(settings).ok
    upstream.maintenance_root = True
    upstream.not_found_once.add("helper")
    failed = run_pass(settings)
    assert not failed.ok
    assert "helper-1.5-py3-none-any.whl" in stored(settings.cache_dir)
    assert offline_files(settings, "helper") == ["helper-1.5-py3-none-any.whl"]


def test_held_file_gone_from_disk__next_pass_fetches_it_again(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    files = settings.cache_dir / "files"
    (victim,) = [p for p in files.rglob("helper-1.5-py3-none-any.whl")]
    victim.unlink()
    result = run_pass(settings)  # no change upstream: only the disk says it is not whole
    assert result.ok, result.errors
    assert victim.exists()
    assert held_missing(settings) == []


def test_maintenance_page_after_the_page_was_dropped__held_files_kept(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """With no stored page to compare with, what the mirror holds stands in for it."""
    settings = dataclasses.replace(configure(tmp_path, upstream), admin_token="t")
    assert run_pass(settings).ok
    with ThreadedProxy(settings) as proxy:
        forgot = httpx.post(proxy.url + "/admin/forget/demo", headers={"x-admin-token": "t"})
        assert forgot.status_code == 200
    upstream.maintenance = True
    before = stored(settings.cache_dir)
    failed = run_pass(settings)  # the disk check sends demo round again: the page is gone
    assert not failed.ok
    assert any("SuspectPage" in e for e in failed.errors), failed.errors
    assert stored(settings.cache_dir) == before
    upstream.maintenance = False
    assert run_pass(settings).ok
    assert offline_files(settings, "demo") == DEMO
