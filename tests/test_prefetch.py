from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import httpx
import pytest

from prefetch.state import PrefetchState
from proxy.settings import Settings, load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, prefetch_db, prefetch_lock, run_pass, stored
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_sdist, make_wheel

JSON = "application/vnd.pypi.simple.v1+json"


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
            "prefetch": {"workers": 4, "max_attempts": 2, **prefetch},
        },
    )


def test_full_pass__xmlrpc_mirrors_everything(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    result = run_pass(settings)
    assert result.ok, result.errors
    assert result.method == "xmlrpc"
    assert result.target == upstream.serial
    files = stored(settings.cache_dir)
    assert set(files) == {
        "demo-1.0-py3-none-any.whl",
        "demo-1.0-py3-none-any.whl.metadata",
        "demo-2.0-py3-none-any.whl",
        "demo-2.0-py3-none-any.whl.metadata",
        "helper-1.5-py3-none-any.whl",
        "helper-1.5-py3-none-any.whl.metadata",
    }
    assert all_whole(settings.cache_dir)
    state = PrefetchState(prefetch_db(settings.cache_dir))
    assert state.get_meta("mirror_serial") == upstream.serial
    assert state.figures()["projects"] == 2
    assert state.queue_length() == 0
    state.close()


def test_incremental__only_changed_projects_and_new_files(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    upstream.reset_log()
    again = run_pass(settings)
    assert again.ok
    assert again.synced == 0
    assert upstream.count("/simple/") == 0
    assert upstream.count("/files/") == 0
    upstream.add_dist("demo", make_sdist("demo", "3.0"))
    upstream.reset_log()
    third = run_pass(settings)
    assert third.ok
    assert third.synced == 1
    assert upstream.count("/simple/demo/") == 1
    assert upstream.count("/simple/helper/") == 0
    assert sorted(r.path for r in upstream.requests if r.path.startswith("/files/")) == [
        "/files/demo/demo-3.0.tar.gz",
        "/files/demo/demo-3.0.tar.gz.metadata",
    ]


def test_yank_and_removal__follow_upstream(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    upstream.yank("demo", "demo-2.0-py3-none-any.whl", "broken on Tuesdays")
    upstream.remove_file("demo", "demo-1.0-py3-none-any.whl")
    upstream.remove_project("helper")
    result = run_pass(settings)
    assert result.ok, result.errors
    files = stored(settings.cache_dir)
    assert "demo-1.0-py3-none-any.whl" not in files
    assert "demo-1.0-py3-none-any.whl.metadata" not in files
    assert "helper-1.5-py3-none-any.whl" not in files
    assert "demo-2.0-py3-none-any.whl" in files
    with ThreadedProxy(dataclasses.replace(settings, offline=True)) as proxy:
        page = httpx.get(proxy.url + "/simple/demo/", headers={"accept": JSON}).json()
        assert [f["filename"] for f in page["files"]] == ["demo-2.0-py3-none-any.whl"]
        assert page["files"][0]["yanked"] == "broken on Tuesdays"
        assert httpx.get(proxy.url + "/simple/helper/").status_code == 404


def test_xmlrpc_refused__falls_back_to_json_root(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.xmlrpc_refuse = True
    settings = configure(tmp_path, upstream)
    with caplog.at_level(logging.WARNING):
        result = run_pass(settings)
    assert result.ok, result.errors
    assert result.method == "json-root"
    assert "falling back" in caplog.text
    assert len(stored(settings.cache_dir)) == 6
    upstream.add_dist("helper", make_wheel("helper", "1.6"))
    upstream.reset_log()
    again = run_pass(settings)
    assert again.synced == 1
    assert upstream.count("/simple/demo/") == 0


def test_html_only_upstream__selection_revalidates_each(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.xmlrpc_refuse = True
    upstream.html_only = True
    settings = configure(tmp_path, upstream, projects=["demo"])
    with caplog.at_level(logging.WARNING):
        result = run_pass(settings)
    assert result.ok, result.errors
    assert result.method == "per-project"
    assert "revalidating each project" in caplog.text
    assert {n for n in stored(settings.cache_dir) if n.startswith("helper")} == set()


def test_stale_page__not_accepted_then_recovers(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    upstream.add_dist("demo", make_wheel("demo", "3.0"))
    upstream.stale_serial_for["demo"] = upstream.serial - 5
    failed = run_pass(settings)
    assert not failed.ok
    assert failed.failed == 1
    assert any("StalePage" in e for e in failed.errors)
    assert "demo-3.0-py3-none-any.whl" not in stored(settings.cache_dir)
    del upstream.stale_serial_for["demo"]
    recovered = run_pass(settings)
    assert recovered.ok, recovered.errors
    assert "demo-3.0-py3-none-any.whl" in stored(settings.cache_dir)


def test_selection_and_filters(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.add_dist("demo", make_sdist("demo", "2.0"))
    requirements = tmp_path / "req.txt"
    requirements.write_text("demo>=1\n")
    settings = configure(
        tmp_path, upstream, requirements=[str(requirements)], packagetypes=["sdist"]
    )
    assert run_pass(settings).ok
    assert set(stored(settings.cache_dir)) == {"demo-2.0.tar.gz", "demo-2.0.tar.gz.metadata"}


def test_command_line_projects_override(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings, ["helper"]).ok
    assert {n.split("-")[0] for n in stored(settings.cache_dir)} == {"helper"}


def test_upstream_down__fails_with_message(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.down = True
    result = run_pass(configure(tmp_path, upstream))
    assert not result.ok
    assert result.errors


def test_pinned__never_evicted(tmp_path: Path, upstream: FakeUpstream) -> None:
    big = make_wheel("big", "1.0", payload_size=400_000)
    other = make_wheel("other", "1.0", payload_size=400_000)
    upstream.add_dist("big", big)
    upstream.add_dist("other", other)
    settings = dataclasses.replace(
        configure(tmp_path, upstream, projects=["big"]), max_cache_size=500_000
    )
    assert run_pass(settings).ok
    with ThreadedProxy(settings) as proxy:
        response = httpx.get(proxy.url + f"/files/other/{other.filename}")
        assert response.status_code == 200
        import time

        time.sleep(0.5)
    names = set(stored(settings.cache_dir))
    assert big.filename in names
    assert other.filename not in names


def test_selective_then_full__nothing_missed_nothing_refetched(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings, ["helper"]).ok
    upstream.reset_log()
    full = run_pass(settings)
    assert full.ok, full.errors
    assert full.synced == 1  # demo; helper was already whole
    assert upstream.count("/files/helper/") == 0
    assert len(stored(settings.cache_dir)) == 6


def test_xmlrpc_paging__many_small_pages(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    upstream.xmlrpc_page_size = 2
    for i in range(5):
        upstream.add_dist("helper", make_wheel("helper", f"2.{i}"))
    result = run_pass(settings)
    assert result.ok
    assert result.target == upstream.serial
    assert sum(1 for n in stored(settings.cache_dir) if n.startswith("helper-2.")) == 10


def test_only_one_pass_at_a_time(tmp_path: Path, upstream: FakeUpstream) -> None:
    import fcntl
    import os

    from prefetch.runner import AlreadyRunning, is_running
    from proxy.runtime import reading

    settings = configure(tmp_path, upstream)
    path = prefetch_lock(settings.cache_dir)  # where an earlier version took it, too
    path.parent.mkdir(parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with reading(settings) as mirror:
            assert is_running(mirror)
        with pytest.raises(AlreadyRunning):
            run_pass(settings)
    finally:
        os.close(fd)
    with reading(settings) as mirror:
        assert not is_running(mirror)
