"""The mirror is not fooled by one lying answer (issue 7, second round): an empty or cut-short
root listing, a lying changelog row or serial, a page cut short on the wire, a re-upload under
one filename, a trickled root, a damaged held file. Prefetch passes against the fake upstream."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import diskcache
import httpx
import pytest

from proxy.runtime import reading
from proxy.settings import Settings
from tests.support import fake_index as model
from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.prefetching import prefetch_db, run_pass, stored
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel
from tests.test_mirror_durability import DEMO, JSON, configure, held_missing, offline_files

HELPER = ["helper-1.5-py3-none-any.whl"]


def held_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """The mirror's held list, as (project, filename, sha256)."""
    with reading(settings) as mirror:
        return sorted((p, h.filename, h.sha256) for p, h in mirror.iter_held())


# -- 1: an empty root or a lying changelog row, plus one 404 -------------------------------------


def test_empty_json_root_plus_one_404__nothing_removed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.xmlrpc_refuse = True
    settings = configure(tmp_path, upstream, method="json-root", max_attempts=1)
    assert run_pass(settings).ok
    empty = {"meta": {"api-version": "1.1", "_last-serial": upstream.serial}, "projects": []}
    upstream.root_json_override = json.dumps(empty).encode()
    upstream.not_found_once.add("helper")
    run_pass(settings)
    assert "helper-1.5-py3-none-any.whl" in stored(settings.cache_dir)
    assert offline_files(settings, "helper") == HELPER
    upstream.root_json_override = None
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "helper") == HELPER
    assert offline_files(settings, "demo") == DEMO


def test_lying_remove_row_in_the_changelog_plus_one_404__kept(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="xmlrpc", max_attempts=1)
    assert run_pass(settings).ok
    with upstream.index.lock:  # the changelog says helper was removed; it is still there
        upstream.index.serial += 1
        row = ("helper", None, int(time.time()), "remove project", upstream.index.serial)
        upstream.index.changelog.append(row)
    upstream.not_found_once.add("helper")
    result = run_pass(settings)
    # The second look found the page: kept. (It is older than the row's serial, so the pass
    # still says the mirror is not whole at that serial: StalePage, not a removal.)
    assert result.files_removed == 0
    assert all("StalePage" in e for e in result.errors), result.errors
    assert "helper-1.5-py3-none-any.whl" in stored(settings.cache_dir)
    assert offline_files(settings, "helper") == HELPER
    assert held_missing(settings) == []


def test_empty_xmlrpc_project_list_for_a_new_selection__nothing_taken_as_gone(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="xmlrpc", max_attempts=1)
    assert run_pass(settings, ["demo", "helper"]).ok
    real = upstream.index.xmlrpc

    def empty_list(method: str, params: tuple[Any, ...], page_size: int) -> Any:
        return {} if method == "list_packages_with_serial" else real(method, params, page_size)

    upstream.index.xmlrpc = empty_list  # type: ignore[method-assign]
    # helper's page answers 404 on every look, while the root index still lists it.
    upstream.raw_routes["/simple/helper/"] = RawAnswer(404, {"Content-Type": "text/plain"})
    failed = run_pass(settings, ["helper"])  # a new selection: the full list is diffed
    assert not failed.ok
    assert failed.files_removed == 0
    assert offline_files(settings, "helper") == HELPER


def test_project_removed_in_the_changelog__still_removed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="xmlrpc")
    assert run_pass(settings).ok
    upstream.remove_project("helper")
    result = run_pass(settings)
    assert result.ok, result.errors
    assert not any(n.startswith("helper") for n in stored(settings.cache_dir))
    assert offline_files(settings, "helper") is None


# -- 2: a root listing cut short, plus one 404 ---------------------------------------------------


def test_truncated_root_listing_plus_one_404__kept(tmp_path: Path, upstream: FakeUpstream) -> None:
    names = ["demo", "helper", "p1", "p2", "p3"]
    for name in ("p1", "p2", "p3"):
        upstream.add_dist(name, make_wheel(name, "1.0"))
    settings = configure(tmp_path, upstream, method="per-project", projects=names, max_attempts=1)
    assert run_pass(settings).ok
    html = model.root_html(upstream.index)
    cut = html[: html.index(b'href="p3/"')]  # the transfer dropped before the last entry
    headers = {"Content-Type": "text/html", "X-PyPI-Last-Serial": str(upstream.serial)}
    upstream.raw_routes["/simple/"] = RawAnswer(200, headers, cut, length=False)
    upstream.not_found_once.add("p3")
    result = run_pass(settings)
    assert result.ok, result.errors
    assert "p3-1.0-py3-none-any.whl" in stored(settings.cache_dir)
    assert offline_files(settings, "p3") == ["p3-1.0-py3-none-any.whl"]


# -- 3: a page cut short at the same serial ------------------------------------------------------


def _cut_demo_page(upstream: FakeUpstream) -> None:
    project = upstream.index.projects["demo"]
    html = model.project_html(project, upstream.base_url, False)
    cut = html[: html.index(b"demo-2.0")]  # the connection dropped before the second link
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "X-PyPI-Last-Serial": str(project.serial),
    }
    upstream.raw_routes["/simple/demo/"] = RawAnswer(200, headers, cut, length=False)


def test_page_cut_short_at_the_same_serial__prefetch_removes_nothing(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(
        tmp_path, upstream, method="per-project", projects=["demo", "helper"], max_attempts=1
    )
    assert run_pass(settings).ok
    before = stored(settings.cache_dir)
    _cut_demo_page(upstream)
    failed = run_pass(settings)
    assert not failed.ok
    assert any("SuspectPage" in e for e in failed.errors), failed.errors
    assert failed.files_removed == 0
    assert stored(settings.cache_dir) == before
    assert offline_files(settings, "demo") == DEMO


def test_page_cut_short_at_the_same_serial__serve_keeps_the_stored_page(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="per-project", projects=["demo"])
    assert run_pass(settings).ok
    _cut_demo_page(upstream)
    with ThreadedProxy(dataclasses.replace(settings, index_ttl=0)) as proxy:
        response = httpx.get(proxy.url + "/simple/demo/", headers={"accept": JSON})
        assert response.status_code == 200
        assert [f["filename"] for f in response.json()["files"]] == DEMO


# -- 4: a lying changelog_last_serial ------------------------------------------------------------


def test_lying_changelog_last_serial__later_passes_still_see_changes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="xmlrpc", max_attempts=1)
    assert run_pass(settings).ok
    real = upstream.index.xmlrpc
    lies = [2_000_000_000]

    def lying(method: str, params: tuple[Any, ...], page_size: int) -> Any:
        if method == "changelog_last_serial" and lies:
            return lies.pop()
        return real(method, params, page_size)

    upstream.index.xmlrpc = lying  # type: ignore[method-assign]
    lied = run_pass(settings)
    assert lied.target is not None and lied.target < 2_000_000_000, lied.target
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    upstream.add_dist("newproj", make_wheel("newproj", "1.0"))
    result = run_pass(settings)
    assert result.ok, result.errors
    assert result.target == upstream.serial
    assert offline_files(settings, "demo") == [*DEMO, "demo-3.0-py3-none-any.whl"]
    assert offline_files(settings, "newproj") == ["newproj-1.0-py3-none-any.whl"]


def test_changelog_row_with_a_lying_serial__later_passes_still_see_changes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, method="xmlrpc", max_attempts=1)
    assert run_pass(settings).ok
    with upstream.index.lock:  # one row far beyond the upstream's own last serial
        row = ("demo", "2.0", int(time.time()), "new release", 2_000_000_000)
        upstream.index.changelog.append(row)
    lied = run_pass(settings)
    assert lied.ok, lied.errors  # demo asked for no serial beyond the upstream's
    assert lied.target == upstream.serial
    upstream.add_dist("helper", make_wheel("helper", "2.0"))
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "helper") == [*HELPER, "helper-2.0-py3-none-any.whl"]


def test_queued_serial_beyond_the_upstream__rediffs_and_catches_up(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A state file poisoned by an older version (queued far beyond the upstream) heals."""
    settings = configure(tmp_path, upstream, method="xmlrpc", max_attempts=1)
    assert run_pass(settings).ok
    db = sqlite3.connect(prefetch_db(settings.cache_dir))
    (marker,) = db.execute("SELECT value FROM meta WHERE key = 'queued_serial'").fetchone()
    poisoned = {**json.loads(marker), "serial": 2_000_000_000}
    db.execute("UPDATE meta SET value = ? WHERE key = 'queued_serial'", (json.dumps(poisoned),))
    db.commit()
    db.close()
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    result = run_pass(settings)
    assert result.ok, result.errors
    assert offline_files(settings, "demo") == [*DEMO, "demo-3.0-py3-none-any.whl"]


# -- 5: one filename twice with two hashes -------------------------------------------------------


def _reupload(upstream: FakeUpstream) -> list[tuple[str, str]]:
    first, second = make_wheel("dup", "1.0"), make_wheel("dup", "1.0", payload_size=100)
    assert first.filename == second.filename and first.sha256 != second.sha256
    files = []
    for key, wheel in (("a", first), ("b", second)):
        path = f"/blobs/{key}/{wheel.filename}"
        headers = {"Content-Type": "application/octet-stream"}
        upstream.raw_routes[path] = RawAnswer(200, headers, wheel.content)
        files.append(
            {
                "filename": wheel.filename,
                "url": upstream.base_url + path,
                "hashes": {"sha256": wheel.sha256},
                "size": len(wheel.content),
            }
        )
    page = {"meta": {"api-version": "1.1", "_last-serial": 3}, "name": "dup", "files": files}
    headers = {"Content-Type": JSON, "X-PyPI-Last-Serial": "3"}
    upstream.raw_routes["/simple/dup/"] = RawAnswer(200, headers, json.dumps(page).encode())
    return [(first.filename, first.sha256), (second.filename, second.sha256)]


def test_reupload_under_one_filename__both_held_and_served_offline(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    wanted = _reupload(upstream)
    settings = configure(tmp_path, upstream, method="per-project", projects=["dup"])
    for _ in range(2):  # a second pass over the same page must not fail either
        result = run_pass(settings)
        assert result.ok, result.errors
    assert held_rows(settings) == sorted(("dup", name, sha) for name, sha in wanted)
    with ThreadedProxy(dataclasses.replace(settings, offline=True)) as proxy:
        base = proxy.url + "/simple/dup/"
        page = httpx.get(base, headers={"accept": JSON}).json()
        got = []
        for entry in page["files"]:
            response = httpx.get(urljoin(base, entry["url"]))
            assert response.status_code == 200, entry["url"]
            assert hashlib.sha256(response.content).hexdigest() == entry["hashes"]["sha256"]
            got.append(entry["hashes"]["sha256"])
    assert sorted(got) == sorted(sha for _name, sha in wanted)


def test_state_with_the_old_files_key__migrates_and_keeps_its_rows(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A state file of two versions back (its held table keyed by (project, filename)), with
    the pins of that time: moved to the held list on open, its rows kept."""
    settings = configure(tmp_path, upstream)
    assert run_pass(settings, ["demo"]).ok
    with reading(settings) as mirror:
        rows = [(p, h.filename, h.sha256, h.size) for p, h in mirror.iter_held()]
    assert rows
    for leftover in (settings.cache_dir / "state").glob("held.sqlite*"):
        leftover.unlink()  # the cache as that version left it: no held list
    db = sqlite3.connect(prefetch_db(settings.cache_dir))
    db.execute(
        "CREATE TABLE files (project TEXT NOT NULL, filename TEXT NOT NULL,"
        " sha256 TEXT NOT NULL, size INTEGER, PRIMARY KEY (project, filename))"
    )
    db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    with diskcache.Cache(str(settings.cache_dir / "index")) as index:
        for _p, _f, sha, _z in rows:
            index.set("pin:" + sha, True)
    wanted = _reupload(upstream)
    result = run_pass(settings, ["demo", "dup"])
    assert result.ok, result.errors
    held = held_rows(settings)
    assert [r for r in held if r[0] == "demo"] == sorted((p, f, s) for p, f, s, _z in rows)
    assert [r for r in held if r[0] == "dup"] == sorted(("dup", n, s) for n, s in wanted)


# -- 8: a trickled or endless JSON root ----------------------------------------------------------


@pytest.mark.parametrize("own_deadline", [True, False], ids=["root_deadline", "derived"])
def test_trickled_json_root__pass_fails_within_root_deadline(
    tmp_path: Path, upstream: FakeUpstream, own_deadline: bool
) -> None:
    upstream.xmlrpc_refuse = True
    extra = {"root_deadline": 1} if own_deadline else {}
    settings = configure(tmp_path, upstream, method="json-root", max_attempts=1, **extra)
    assert run_pass(settings).ok
    if not own_deadline:  # unset: ten times upstream_deadline
        settings = dataclasses.replace(settings, upstream_deadline=0.1)
    body = model.root_json(upstream.index) + b" " * 3000
    upstream.raw_routes["/simple/"] = RawAnswer(
        200, {"Content-Type": JSON}, body, chunk=10, pace=0.1
    )
    started = time.monotonic()
    failed = run_pass(settings)
    assert time.monotonic() - started < 10
    assert not failed.ok
    assert any("root_deadline" in e for e in failed.errors), failed.errors
    assert offline_files(settings, "demo") == DEMO


def test_json_root_over_max_root_size__pass_fails(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.xmlrpc_refuse = True
    settings = configure(tmp_path, upstream, method="json-root", max_attempts=1)
    assert run_pass(settings).ok
    capped = dataclasses.replace(
        settings, prefetch=dataclasses.replace(settings.prefetch, max_root_size=100_000)
    )
    body = model.root_json(upstream.index)[:-1] + b" " * 200_000 + b"}"
    upstream.raw_routes["/simple/"] = RawAnswer(200, {"Content-Type": JSON}, body)
    failed = run_pass(capped)
    assert not failed.ok
    assert any("max_root_size" in e for e in failed.errors), failed.errors


# -- 9: a held file damaged on disk --------------------------------------------------------------


def test_truncated_held_file__dropped_and_fetched_again(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    (victim,) = (settings.cache_dir / "files").rglob("helper-1.5-py3-none-any.whl")
    whole = victim.read_bytes()
    os.truncate(victim, len(whole) // 2)
    result = run_pass(settings)  # nothing changed upstream: only the size says it is damaged
    assert result.ok, result.errors
    assert victim.read_bytes() == whole
    assert offline_files(settings, "helper") == HELPER


def test_truncated_held_file_with_one_attempt__pass_fails(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream, max_attempts=1)
    assert run_pass(settings).ok
    (victim,) = (settings.cache_dir / "files").rglob("helper-1.5-py3-none-any.whl")
    os.truncate(victim, victim.stat().st_size // 2)
    failed = run_pass(settings)
    assert not failed.ok
    assert any("helper" in e for e in failed.errors), failed.errors
    assert not victim.exists()  # the damaged copy is not left to be served


def test_truncated_held_file_of_a_project_synced_again__not_held_truncated(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Per-project passes sync every project: the sync itself must not take the damaged copy
    as held (recording its short size would hide it from the disk check for good)."""
    settings = configure(tmp_path, upstream, method="per-project", projects=["demo", "helper"])
    assert run_pass(settings).ok
    (victim,) = (settings.cache_dir / "files").rglob("helper-1.5-py3-none-any.whl")
    whole = victim.read_bytes()
    os.truncate(victim, len(whole) // 2)
    result = run_pass(settings)
    assert result.ok, result.errors
    assert victim.read_bytes() == whole
    assert run_pass(settings).ok
    assert victim.read_bytes() == whole
