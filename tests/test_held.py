"""The held list (proxy/heldfiles.py): one source of truth for what the mirror holds, moved in
from a cache directory of the previous version, published to a bucket's pins, checked by verify.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import anyio
import diskcache
import obstore
import pytest

from prefetch.state import PrefetchState
from proxy.cache import Mirror
from proxy.evict import evict
from proxy.heldfiles import HeldFile, HeldFiles
from proxy.heldmigration import UNKNOWN_PROJECT
from proxy.holdings import Holdings
from proxy.pageservice import PageService
from proxy.runtime import Runtime, reading
from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from proxy.sharedrecords import PINS
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.verify import verify
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import run_pass
from tests.support.s3 import (
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)
from tests.test_prefetch import configure
from tests.test_tiered import _part, _replica
from tests.test_verify import verify as verify_command

A, B = "a" * 64, "b" * 64


def test_held_list__bytes_two_projects_hold_stay_held_until_the_last_lets_go(
    tmp_path: Path,
) -> None:
    held = HeldFiles(tmp_path / "held.sqlite")
    shared = HeldFile("shared-1.0.tar.gz", A, 10)
    assert held.hold("one", [shared, HeldFile("one-1.0.tar.gz", B, None)]) == {A, B}
    assert held.hold("two", [shared]) == set()  # held already, by one
    assert held.release("two", [shared]) == set()  # one still holds it
    assert held.is_held(A) and held.is_held(A, "shared-1.0.tar.gz")
    assert not held.is_held(A, "other-name.tar.gz")
    assert held.release("two", [shared]) == set()  # two held nothing of it any more
    assert held.release("one", [shared]) == {A}
    assert not held.is_held(A)
    assert held.held_files("one") == [HeldFile("one-1.0.tar.gz", B, None)]
    held.close()


def test_held_list__a_size_given_is_recorded_none_keeps_it(tmp_path: Path) -> None:
    held = HeldFiles(tmp_path / "held.sqlite")
    held.hold("p", [HeldFile("p-1.0.tar.gz", A, 123)])
    held.hold("p", [HeldFile("p-1.0.tar.gz", A, None)])  # a claim before a download
    assert held.held_files("p") == [HeldFile("p-1.0.tar.gz", A, 123)]
    held.hold("p", [HeldFile("p-1.0.tar.gz", A, 99)])  # fetched again, verified
    assert held.held_files("p") == [HeldFile("p-1.0.tar.gz", A, 99)]
    assert held.figures() == {"files": 1, "bytes": 99}
    held.close()


def test_held_list__every_row_read_in_batches(tmp_path: Path) -> None:
    held = HeldFiles(tmp_path / "held.sqlite")
    rows = [(f"p{i % 3}", HeldFile(f"f{i}.tar.gz", f"{i:064x}", i)) for i in range(7)]
    for project, row in rows:
        held.hold(project, [row])
    assert sorted(held.iter_held(batch=2), key=str) == sorted(rows, key=str)
    assert list(held.iter_shas(batch=3)) == sorted(f"{i:064x}" for i in range(7))
    held.close()


# -- a cache directory of the previous version ---------------------------------------------------

# The previous prefetcher's state file, as its schema created it.
_OLD_STATE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE projects (name TEXT PRIMARY KEY, serial INTEGER);
CREATE TABLE queue (
    name TEXT PRIMARY KEY, serial INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE files (
    project TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER,
    PRIMARY KEY (project, filename, sha256)
);
"""


def _old_cache(root: Path) -> dict[str, str]:
    """A cache directory as the previous version left it: pin: keys in the index for what the
    prefetcher held, its files table, and two pins no row explains (one of a stored file)."""
    files: dict[str, str] = {}
    for name in ("demo-1.0.tar.gz", "demo-2.0.tar.gz", "stray-1.0.tar.gz", "cold-1.0.tar.gz"):
        data = name.encode() * 100
        sha = files[name] = hashlib.sha256(data).hexdigest()
        if name != "cold-1.0.tar.gz":  # the one never downloaded
            path = root / "files" / sha[:2] / sha / name
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
    with diskcache.Cache(str(root / "index")) as index:
        for name in ("demo-1.0.tar.gz", "demo-2.0.tar.gz", "stray-1.0.tar.gz", "cold-1.0.tar.gz"):
            index.set("pin:" + files[name], True)
    (root / "state").mkdir()
    db = sqlite3.connect(root / "state" / "prefetch.sqlite")
    db.executescript(_OLD_STATE)
    db.execute("INSERT INTO projects VALUES ('demo', 7)")
    db.execute("INSERT INTO meta VALUES ('mirror_serial', '7')")
    db.executemany(
        "INSERT INTO files VALUES ('demo', ?, ?, ?)",
        [(n, files[n], 1500) for n in ("demo-1.0.tar.gz", "demo-2.0.tar.gz")],
    )
    db.commit()
    db.close()
    return files


def test_migration__old_pins_and_held_table_moved_in_once_on_open(tmp_path: Path) -> None:
    files = _old_cache(tmp_path)
    storage = Storage(tmp_path)
    try:
        assert sorted(storage.held.held_files("demo"), key=lambda h: h.filename) == [
            HeldFile("demo-1.0.tar.gz", files["demo-1.0.tar.gz"], 1500),
            HeldFile("demo-2.0.tar.gz", files["demo-2.0.tar.gz"], 1500),
        ]
        # A pin no row explains stays held for the file it kept; one of no stored file goes.
        stray = HeldFile("stray-1.0.tar.gz", files["stray-1.0.tar.gz"], 1600)
        assert storage.held.held_files(UNKNOWN_PROJECT) == [stray]
        assert not storage.is_held(files["cold-1.0.tar.gz"])
        assert [k for k in storage.index.iterkeys() if str(k).startswith("pin:")] == []
        # What was held is still kept from eviction, however far over the cap.
        assert evict(storage, 1).files == 0
    finally:
        storage.close()
    db = sqlite3.connect(tmp_path / "state" / "prefetch.sqlite")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert "files" not in tables
    state = PrefetchState(tmp_path / "state" / "prefetch.sqlite")  # the rest of it still works
    assert state.project_names() == ["demo"] and state.get_meta("mirror_serial") == 7
    state.close()
    # Once: an old key appearing later (an old binary run again) is not taken for a hold.
    with diskcache.Cache(str(tmp_path / "index")) as index:
        index.set("pin:" + files["cold-1.0.tar.gz"], True)
    again = Storage(tmp_path)
    try:
        assert len(list(again.held.iter_held())) == 3
        assert not again.is_held(files["cold-1.0.tar.gz"])
    finally:
        again.close()


def test_migration__a_prefetched_cache_passes_again_with_nothing_fetched(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A mirror the previous version made (its held list dropped, rebuilt as that version kept
    it) is whole to the next pass, which fetches nothing."""
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    with reading(settings) as mirror:
        rows = [(p, h.filename, h.sha256, h.size) for p, h in mirror.iter_held()]
    assert len(rows) == 6
    for path in (settings.cache_dir / "state").glob("held.sqlite*"):
        path.unlink()
    db = sqlite3.connect(settings.cache_dir / "state" / "prefetch.sqlite")
    db.execute(
        "CREATE TABLE files (project TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL,"
        " size INTEGER, PRIMARY KEY (project, filename, sha256))"
    )
    db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    upstream.reset_log()
    again = run_pass(settings, ["demo", "helper"])
    assert again.ok, again.errors
    assert upstream.count("/files/") == 0
    with reading(settings) as mirror:
        assert sorted((p, h.filename, h.sha256, h.size) for p, h in mirror.iter_held()) == sorted(
            rows
        )


# -- verify --------------------------------------------------------------------------------------


def test_verify__held_rows_of_files_not_stored_reported_then_released(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    ghost = HeldFile("ghost-1.0.tar.gz", A, 10)  # held, never stored, on no page
    with reading(settings) as mirror:
        mirror.hold("ghost", [ghost])
    code, report = verify_command(upstream, settings.cache_dir, "--no-repair")
    assert code == 3, report
    assert report["held_missing"] == 1 and report["held_released"] == 0
    code, report = verify_command(upstream, settings.cache_dir)
    assert code == 1, report  # found and mended
    assert report["held_missing"] == 1 and report["held_released"] == 1
    with reading(settings) as mirror:
        assert mirror.held_files("ghost") == []
        assert len(list(mirror.iter_held())) == 6  # the prefetched files stay held
    code, report = verify_command(upstream, settings.cache_dir)
    assert code == 0, report


# -- a bucket replicas share: its pins/<sha256> are the held list's published copy -------------


def _bucket_pins(storage: Storage) -> set[str]:
    objects = storage.files.bucket.objects  # type: ignore[attr-defined]
    return {
        meta["path"].removeprefix(PINS) for chunk in obstore.list(objects, PINS) for meta in chunk
    }


def test_bucket__hold_pins_first_release_unpins_only_what_it_let_go(
    s3_config: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _replica(tmp_path / "a", s3_config)
    try:
        held = Holdings(a, Stats())
        assert a.shared is not None
        a.shared.pin(B)  # another replica's: not on this replica's list
        held.hold("demo", [HeldFile("demo-1.0.tar.gz", A, 10)])
        assert _bucket_pins(a) == {A, B}

        def down(sha256: str) -> None:
            raise OSError("the bucket is down")

        monkeypatch.setattr(a.shared, "pin", down)
        with pytest.raises(OSError, match="the bucket is down"):
            held.hold("demo", [HeldFile("demo-2.0.tar.gz", "c" * 64, 10)])
        assert not a.held.is_held("c" * 64)  # no row here without its pin there
        monkeypatch.undo()
        assert held.release("demo", [HeldFile("demo-1.0.tar.gz", A, 10)]) == {A}
        assert _bucket_pins(a) == {B}  # B: never this replica's to delete
        assert held.release("demo", [HeldFile("x-1.0.tar.gz", B, 10)]) == set()
        assert _bucket_pins(a) == {B}
    finally:
        a.close()


def test_bucket__publish_writes_missing_pins_never_deletes_and_verify_mends(
    s3_config: S3Config, tmp_path: Path
) -> None:
    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        part, sha, _ = _part(tmp_path / "parts", "demo-1.0.tar.gz", 1000)
        a.commit(part, sha, "demo-1.0.tar.gz")
        assert a.flush(30)
        a.held.hold("demo", [HeldFile("demo-1.0.tar.gz", sha, 1000)])  # as a migration does
        assert b.shared is not None
        b.shared.pin(B)  # B holds what A's list lacks
        stats = Stats()
        pages = PageService(a, None, stats, ttl=60, negative_ttl=60, memory_bytes=2**20)
        mirror = Mirror(a, pages, stats, None)
        assert mirror.publish(write=False) == 1
        runtime = cast(Runtime, SimpleNamespace(mirror=mirror))  # all verify asks of it
        checked = anyio.run(partial(verify, runtime, repair=False))
        assert checked.unpublished_pins == 1 and checked.pins_written == 0
        assert checked.exit_status == 3
        assert sha not in _bucket_pins(a)
        mended = anyio.run(verify, runtime)
        assert mended.unpublished_pins == 1 and mended.pins_written == 1
        assert mended.exit_status == 1
        assert _bucket_pins(a) == {sha, B}
        assert mirror.publish() == 0  # nothing missing; B's pin stays
        assert _bucket_pins(a) == {sha, B}
        assert b.is_held(sha)  # B's eviction now keeps it too
    finally:
        a.close()
        b.close()


def test_bucket__a_prefetch_pass_ends_with_every_held_file_pinned(
    s3_config: S3Config, tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = dataclasses.replace(
        configure(tmp_path, upstream),
        storage=f"s3://{s3_config.bucket}/{s3_config.prefix}",
        s3_endpoint=s3_config.endpoint,
        s3_region=s3_config.region,
        s3_access_key_id=s3_config.access_key_id,
        s3_secret_access_key=s3_config.secret_access_key,
    )
    assert run_pass(settings).ok
    with reading(settings) as mirror:
        held = {h.sha256 for _p, h in mirror.iter_held()}
    bucket = S3FileStore(s3_config).objects
    pins = {m["path"].removeprefix(PINS) for chunk in obstore.list(bucket, PINS) for m in chunk}
    assert held and pins == held
    lost = sorted(held)[0]
    obstore.delete(bucket, PINS + lost)  # lost between hold and now (a failed write, say)
    again = run_pass(settings)  # nothing changed upstream: only the reconciling end
    assert again.ok and again.synced == 0, again.errors
    pins = {m["path"].removeprefix(PINS) for chunk in obstore.list(bucket, PINS) for m in chunk}
    assert pins == held
