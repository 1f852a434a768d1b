"""The tiered store (a local directory in front of a bucket) and what Storage shares through the
bucket (pages, pins), against moto's S3 API server on loopback (tests/support/s3.py).

Two Storage objects with their own cache directories over one bucket stand for two replicas.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio
import obstore
import pytest

from proxy.errors import SettingsError
from proxy.heldfiles import HeldFile
from proxy.holdings import Holdings
from proxy.localstore import LocalFileStore
from proxy.models import DistFile, PageRecord, ProjectPage
from proxy.render import render_project
from proxy.runtime import Runtime
from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from proxy.settings import Settings, load_settings
from proxy.sharedrecords import SharedRecords, decode_page, encode_page
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.tiered import TieredFileStore, wait_uploaded
from proxy.verify import REPAIRED, WHOLE, VerifyReport, verify
from tests.support.s3 import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)


def _tiered(root: Path, config: S3Config, cap: int | None = None) -> TieredFileStore:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    return TieredFileStore(
        LocalFileStore(root / "files"),
        S3FileStore(config),
        work_dir=root / "tmp",
        queue_dir=root / "uploads",
        local_cap=cap,
    )


def _replica(root: Path, config: S3Config, cap: int | None = None) -> Storage:
    files = _tiered(root, config, cap)
    return Storage(root, files, SharedRecords(files.bucket))


def _part(root: Path, name: str, size: int) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.part"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), data


def test_tiered__commit_local_first_then_uploaded(s3_config: S3Config, tmp_path: Path) -> None:
    a = _tiered(tmp_path / "a", s3_config)
    part, sha, data = _part(tmp_path, "demo-1.0.tar.gz", 70_000)
    stored, created = a.put(part, sha, "demo-1.0.tar.gz")
    assert created and stored.path is not None and stored.path.read_bytes() == data
    assert a.pending() == [(sha, "demo-1.0.tar.gz")]
    assert a.bucket.stat(sha, "demo-1.0.tar.gz") is None  # not yet: the uploader's job
    assert a.presign(stored, 60) is None  # no URL to an object that is not there
    assert wait_uploaded(a)
    assert a.pending() == []
    remote = a.bucket.stat(sha, "demo-1.0.tar.gz")
    assert remote is not None and remote.size == len(data)
    assert a.presign(stored, 60) is not None


def test_tiered__second_replica_copies_in_and_verifies(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    part, sha, data = _part(tmp_path, "demo-1.0-py3-none-any.whl", 200_000)
    a.put(part, sha, "demo-1.0-py3-none-any.whl")
    assert b.stat(sha, "demo-1.0-py3-none-any.whl") is None  # only in A's queue
    wait_uploaded(a)
    remote = b.stat(sha, "demo-1.0-py3-none-any.whl")
    assert remote is not None and remote.path is None  # held: in the bucket, not copied yet
    assert not (tmp_path / "b" / "files" / sha[:2]).exists()
    found = b.local_copy(remote)
    assert found is not None and found.path is not None  # a local copy: sent with sendfile
    assert found.path.is_relative_to(tmp_path / "b" / "files")
    assert found.path.read_bytes() == data
    assert list((tmp_path / "b" / "tmp").iterdir()) == []  # nothing half-written kept


def test_tiered__damaged_bucket_object_is_dropped_not_served(
    s3_config: S3Config, tmp_path: Path
) -> None:
    b = _tiered(tmp_path / "b", s3_config)
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    key = b.bucket.key_of(sha, "demo-1.0.tar.gz")
    obstore.put(b.bucket.objects, key, data[:-1] + bytes([data[-1] ^ 1]))  # one bit off
    remote = b.stat(sha, "demo-1.0.tar.gz")
    assert remote is not None and remote.size == len(data)  # a HEAD cannot tell
    assert b.local_copy(remote) is None
    assert b.damaged_dropped == 1
    assert b.bucket.stat(sha, "demo-1.0.tar.gz") is None  # deleted from the bucket
    assert not (tmp_path / "b" / "files" / sha[:2] / sha).exists()
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_tiered__two_replicas_filling_one_file(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    data = os.urandom(30_000)
    sha = hashlib.sha256(data).hexdigest()
    for store, where in ((a, "pa"), (b, "pb")):
        (tmp_path / where).write_bytes(data)
        store.put(tmp_path / where, sha, "demo-2.0.tar.gz")
    assert wait_uploaded(a) and wait_uploaded(b)  # the second is told it exists: no error
    objects = [f for f in a.bucket.iter_files() if f.sha256 == sha]
    assert len(objects) == 1 and objects[0].size == len(data)
    assert b"".join(a.bucket.read(objects[0])) == data


def test_tiered__queue_survives_a_restart(s3_config: S3Config, tmp_path: Path) -> None:
    first = _tiered(tmp_path / "a", s3_config)
    part, sha, _ = _part(tmp_path, "demo-3.0.tar.gz", 1000)
    first.put(part, sha, "demo-3.0.tar.gz")
    first.close()  # "crash": nothing was sent
    again = _tiered(tmp_path / "a", s3_config)
    assert again.pending() == [(sha, "demo-3.0.tar.gz")]
    again.start()  # the uploader a server runs
    try:
        assert wait_uploaded(again, timeout=20)
    finally:
        again.close()
    assert again.bucket.stat(sha, "demo-3.0.tar.gz") is not None


def test_tiered__queued_without_local_copy_is_dropped(s3_config: S3Config, tmp_path: Path) -> None:
    store = _tiered(tmp_path / "a", s3_config)
    sha = "ab" * 32
    entry = tmp_path / "a" / "uploads" / f"{sha}.gone-1.0.tar.gz"
    entry.touch()  # queued, its copy not yet renamed into place: maybe a put under way
    assert store.upload_pending() == 0
    assert store.pending() == [(sha, "gone-1.0.tar.gz")]  # kept while it is new
    os.utime(entry, (time.time() - 120, time.time() - 120))  # a crash before the copy
    assert store.upload_pending() == 0
    assert store.pending() == []


def test_tiered__local_tier_capped_never_the_only_copy(s3_config: S3Config, tmp_path: Path) -> None:
    store = _tiered(tmp_path / "a", s3_config, cap=25_000)
    names = []
    for i in range(3):
        part, sha, _ = _part(tmp_path, f"demo-{i}.tar.gz", 10_000)
        store.put(part, sha, f"demo-{i}.tar.gz")
        names.append((sha, f"demo-{i}.tar.gz"))
    # 30,000 bytes over a 25,000 cap, but nothing was uploaded: every local copy stays
    assert all(store.local.stat(*n) is not None for n in names)
    assert wait_uploaded(store)
    assert store.local_bytes() <= 25_000 * 0.9
    assert sum(store.local.stat(*n) is not None for n in names) == 2
    # the one that went is still held, and copied in again from the bucket when asked
    for n in names:
        again = store.stat(*n)
        assert again is not None and store.local_copy(again) is not None


def test_tiered__remove_goes_everywhere(s3_config: S3Config, tmp_path: Path) -> None:
    store = _tiered(tmp_path / "a", s3_config)
    part, sha, _ = _part(tmp_path, "demo-4.0.tar.gz", 4000)
    store.put(part, sha, "demo-4.0.tar.gz")
    wait_uploaded(store)
    assert [f.sha256 for f in store.iter_files()] == [sha]
    assert store.remove(sha, "demo-4.0.tar.gz") == 4000
    assert store.stat(sha, "demo-4.0.tar.gz") is None
    assert list(store.iter_files()) == []


def _record(project: str, serial: int, sha: str) -> PageRecord:
    files = (
        DistFile(
            "demo-1.0.tar.gz",
            "https://files.invalid/demo-1.0.tar.gz",
            {"sha256": sha},
            size=10,
            core_metadata={"sha256": sha},
        ),
    )
    page = ProjectPage(name=project, files=files, serial=serial, versions=("1.0",))
    return PageRecord(project, page, render_project(page, project), fetched_at=100.0 + serial)


def test_shared_pages__codec_round_trip_and_refusals() -> None:
    record = _record("demo", 7, "cd" * 32)
    back = decode_page(encode_page(record), "demo")
    assert back is not None
    assert back.page == record.page
    assert back.rendered == record.rendered  # rendered here again, to the same bytes
    assert decode_page(encode_page(record), "other") is None  # a record under another key
    assert decode_page(b"\x80\x04garbage", "demo") is None
    assert decode_page(b'{"format": 1, "project": "demo"}', "demo") is None


def test_storage__pages_and_pins_shared(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        a.save_page(_record("demo", 5, "cd" * 32))
        got = b.load_page("demo")  # none here: read from the bucket and kept
        assert got is not None and got.page.serial == 5
        assert b.has_page("demo")
        Holdings(a, Stats()).hold("demo", [HeldFile("demo-1.0.tar.gz", "cd" * 32, 1)])
        assert b.is_held("cd" * 32)  # through the bucket's pin: B's own list is empty
        assert not b.held.is_held("cd" * 32)
        a.save_page(_record("demo", 6, "cd" * 32))
        generation = b.generation("demo")
        assert b.sync_pages() == 1  # the newer record, by polling
        assert b.load_page("demo").page.serial == 6  # type: ignore[union-attr]
        assert b.generation("demo") > generation  # in-memory copies of it are dropped
        assert b.sync_pages() == 0
        a.save_page(_record("other", 1, "ef" * 32))  # followed through the change markers
        changes = [k for k, _ in SharedRecords(S3FileStore(s3_config)).changes(0.0)]
        assert len(changes) == 3 and changes == sorted(changes)
        assert b.sync_pages() == 1 and b.has_page("other")
        assert b.sync_pages() == 0  # markers in the re-read window are not read twice
        a.delete_page("demo")
        assert b.sync_pages() == 1  # removed on every replica that had it
        assert not b.has_page("demo")
        c = _replica(tmp_path / "c", s3_config)
        assert c.load_page("demo") is None
        assert c.sync_pages() == 1 and c.has_page("other")  # a new replica reads them all
        c.close()
        shared = SharedRecords(S3FileStore(s3_config))
        assert shared.sweep_changes(now=time.time() + 2 * 86400) == 4
        assert list(shared.changes(0.0)) == []
    finally:
        a.close()
        b.close()


def test_storage__lease_in_the_bucket(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        held = a.lease("prefetch").acquire("replica-a", 60)
        assert held is not None
        assert b.lease("prefetch").acquire("replica-b", 60) is None
        assert a.lease("prefetch").release(held)
        assert b.lease("prefetch").acquire("replica-b", 60) is not None
    finally:
        a.close()
        b.close()


def test_settings__storage_from_every_source(tmp_path: Path) -> None:
    assert load_settings(None, {}, {}).storage is None
    flag = load_settings(None, {}, {"storage": "s3://mirror-bucket/pypi/"})
    assert flag.storage == "s3://mirror-bucket/pypi"
    env = load_settings(None, {"PYPI_PROXY_STORAGE": "s3://mirror-bucket"}, {})
    assert env.storage == "s3://mirror-bucket"
    secret = tmp_path / "key"
    secret.write_text(SECRET_ACCESS_KEY + "\n")
    filed = load_settings(
        None,
        {"PYPI_PROXY_S3_SECRET_ACCESS_KEY_FILE": str(secret)},
        {"s3_access_key_id": ACCESS_KEY_ID, "s3_endpoint": "http://127.0.0.1:9000/"},
    )
    assert filed.s3_secret_access_key == SECRET_ACCESS_KEY
    assert filed.s3_endpoint == "http://127.0.0.1:9000"
    assert load_settings(None, {"PYPI_PROXY_LOCAL_COPIES_SIZE": "2G"}, {}).local_copies_size == (
        2 * 1024**3
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage", "/srv/files"),
        ("storage", "s3://Bad_Bucket/x"),
        ("storage", "s3://key:secret@bucket/x"),
        ("s3_endpoint", "ftp://host"),
        ("s3_endpoint", "http://key:secret@host"),
        ("s3_redirect_expiry", "999999999"),
    ],
)
def test_settings__bad_storage_values_refused(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {}, {key: value})
    assert key in str(caught.value)
    assert "secret" not in str(caught.value)


class Busy(Exception):
    pass


def test_holding__one_holder_renewed_and_lost_stops_the_work(tmp_path: Path) -> None:
    import anyio

    from proxy.lease import LeaseLost, holding, local_lease

    keeper = local_lease(tmp_path, "prefetch")

    async def main() -> None:
        async with holding(keeper, 0.3, Busy, holder="a"):
            with pytest.raises(Busy, match="holds the prefetch lease"):
                async with holding(keeper, 0.3, Busy, holder="b"):
                    pass
            await anyio.sleep(0.5)  # longer than its ttl: renewals kept it
            info = keeper.current()
            assert info is not None and info.holder == "a"
        assert keeper.current() is None  # released at once
        with pytest.raises(LeaseLost):
            await taken_over()

    async def taken_over() -> None:
        async with holding(keeper, 0.3, Busy, holder="a") as lease:
            # someone takes it over (as after an expiry): the next renewal is refused
            keeper.records.replace(b'{"holder": "c", "expires": 9e12}', lease.version)
            await anyio.sleep(5)
            raise AssertionError("the work was not stopped")

    anyio.run(main)


def test_eviction__works_on_the_bucket_under_its_lease(s3_config: S3Config, tmp_path: Path) -> None:
    from proxy.sharedevict import evict_once

    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        shas = []
        for i in range(4):
            part, sha, _ = _part(tmp_path / "parts", f"demo-{i}.tar.gz", 10_000)
            a.commit(part, sha, f"demo-{i}.tar.gz")
            shas.append(sha)
        assert a.flush(30)
        Holdings(a, Stats()).hold("demo", [HeldFile("demo-0.tar.gz", shas[0], 10_000)])
        holder = b.lease("evict").acquire("replica-c", 60)
        assert holder is not None
        assert evict_once(b, 25_000).files == 0  # another replica is evicting: skipped
        assert b.lease("evict").release(holder)
        done = evict_once(b, 25_000)
        assert done.files == 2 and done.bytes == 20_000
        left = {f.sha256 for f in a.iter_stored()}
        assert len(left) == 2 and shas[0] in left  # pinned, through the bucket's marker
        for i, sha in enumerate(shas):  # gone for every replica but A's own local copies
            assert (b.stored(sha, f"demo-{i}.tar.gz") is None) == (sha not in left)
    finally:
        a.close()
        b.close()


def test_tiered__damaged_local_copy_goes_alone(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    part, sha, data = _part(tmp_path, "demo-5.0.tar.gz", 8000)
    a.put(part, sha, "demo-5.0.tar.gz")
    assert wait_uploaded(a)
    local = a.local.stat(sha, "demo-5.0.tar.gz")
    assert local is not None and local.path is not None
    local.path.write_bytes(data[:100])  # truncated on this replica's disk
    assert a.remove(sha, "demo-5.0.tar.gz") == 100
    assert a.local.stat(sha, "demo-5.0.tar.gz") is None
    remote = b.stat(sha, "demo-5.0.tar.gz")  # the bucket's good object stays for everyone
    assert remote is not None and remote.size == len(data)
    copy = a.local_copy(remote)
    assert copy is not None and copy.path is not None and copy.path.read_bytes() == data


def test_tiered__damaged_local_copy_uploaded_damaged_goes_everywhere(
    s3_config: S3Config, tmp_path: Path
) -> None:
    a = _tiered(tmp_path / "a", s3_config)
    part, sha, data = _part(tmp_path, "demo-6.0.tar.gz", 8000)
    stored, _ = a.put(part, sha, "demo-6.0.tar.gz")
    assert stored.path is not None and wait_uploaded(a)
    damaged = data[:-1] + bytes([data[-1] ^ 1])
    stored.path.write_bytes(damaged)  # rot on this disk, and the same bad bytes in the bucket
    obstore.put(a.bucket.objects, a.bucket.key_of(sha, "demo-6.0.tar.gz"), damaged)
    assert a.remove(sha, "demo-6.0.tar.gz") == len(data)
    assert a.local.stat(sha, "demo-6.0.tar.gz") is None
    assert a.bucket.stat(sha, "demo-6.0.tar.gz") is None  # no replica may copy it in now
    assert a.damaged_dropped == 1


def test_tiered__upload_failing_stays_queued_then_sent(s3_config: S3Config, tmp_path: Path) -> None:
    import dataclasses

    down = dataclasses.replace(s3_config, endpoint="http://127.0.0.1:9")  # nothing listens
    root = tmp_path / "a"
    (root / "tmp").mkdir(parents=True)
    broken = TieredFileStore(
        LocalFileStore(root / "files"),
        S3FileStore(down, retries=0, retry_timeout=1, connect_timeout=1),
        work_dir=root / "tmp",
        queue_dir=root / "uploads",
    )
    part, sha, data = _part(tmp_path, "demo-6.0.tar.gz", 3000)
    stored, _ = broken.put(part, sha, "demo-6.0.tar.gz")
    assert stored.path is not None and stored.path.read_bytes() == data  # served meanwhile
    assert broken.upload_pending() == 1 and broken.uploads.failed == 1
    assert broken.pending() == [(sha, "demo-6.0.tar.gz")]
    again = _tiered(root, s3_config)  # the next start, the bucket back
    assert wait_uploaded(again)
    remote = again.bucket.stat(sha, "demo-6.0.tar.gz")
    assert remote is not None and remote.size == len(data)


def _drain(chunks: object) -> tuple[bytes, Exception | None]:
    import anyio

    got: list[bytes] = []

    async def run() -> Exception | None:
        try:
            async for chunk in chunks:  # type: ignore[attr-defined]
                got.append(chunk)
        except Exception as exc:
            return exc
        return None

    error = anyio.run(run)
    return b"".join(got), error


def test_tiered__stream_in_sends_and_keeps_a_verified_copy(
    s3_config: S3Config, tmp_path: Path
) -> None:
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    part, sha, data = _part(tmp_path, "demo-7.0.tar.gz", 900_000)  # several chunks
    a.put(part, sha, "demo-7.0.tar.gz")
    assert wait_uploaded(a)
    remote = b.stat(sha, "demo-7.0.tar.gz")
    assert remote is not None
    body, error = _drain(b.stream_in(remote))
    assert error is None and body == data
    kept = b.local.stat(sha, "demo-7.0.tar.gz")
    assert kept is not None and kept.path is not None and kept.path.read_bytes() == data
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_tiered__stream_in_never_sends_a_damaged_object_whole(
    s3_config: S3Config, tmp_path: Path
) -> None:
    b = _tiered(tmp_path / "b", s3_config)
    for size in (900_000, 1000):  # many chunks (cut before the last), one (nothing sent)
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        damaged = bytes([data[0] ^ 1]) + data[1:]
        obstore.put(b.bucket.objects, b.bucket.key_of(sha, "demo-8.0.tar.gz"), damaged)
        remote = b.stat(sha, "demo-8.0.tar.gz")
        assert remote is not None
        body, error = _drain(b.stream_in(remote))
        assert error is not None and "damaged" in str(error)
        assert len(body) < size  # the last chunk held back: never the whole object
        assert b.bucket.stat(sha, "demo-8.0.tar.gz") is None
        assert b.local.stat(sha, "demo-8.0.tar.gz") is None
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_tiered__touch_reaches_the_bucket_from_the_uploader(
    s3_config: S3Config, tmp_path: Path
) -> None:
    store = _tiered(tmp_path / "a", s3_config)
    part, sha, _ = _part(tmp_path, "demo-9.0.tar.gz", 2000)
    store.put(part, sha, "demo-9.0.tar.gz")
    assert wait_uploaded(store)
    remote = store.bucket.stat(sha, "demo-9.0.tar.gz")
    assert remote is not None
    later = time.time() + 7200  # past the marker's rate limit
    store.touch(remote, later)
    marker = "atime/" + store.bucket.key_of(sha, "demo-9.0.tar.gz").removeprefix("files/")
    with pytest.raises(FileNotFoundError):
        obstore.head(store.bucket.objects, marker)  # not written on the caller's thread
    store.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                obstore.head(store.bucket.objects, marker)
                break
            except FileNotFoundError:
                assert time.monotonic() < deadline, "the access marker was never written"
                time.sleep(0.05)
    finally:
        store.close()


def _verify(settings: Settings) -> VerifyReport:
    async def run() -> VerifyReport:
        runtime = await Runtime.open(settings)
        try:
            return await verify(runtime, repair=True)
        finally:
            await runtime.close()  # what verify queued for upload is sent here

    return anyio.run(run)


def test_verify__damaged_bucket_object_behind_a_good_local_copy(
    s3_config: S3Config, tmp_path: Path
) -> None:
    settings = Settings(
        cache_dir=tmp_path / "a",
        storage=s3_config.url,
        s3_endpoint=s3_config.endpoint,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
        offline=True,
    )
    name = "demo-1.0.tar.gz"
    part, sha, data = _part(tmp_path, name, 9000)
    storage = Storage.from_settings(settings)
    try:
        page = ProjectPage(
            name="demo",
            files=(
                DistFile(name, f"https://files.invalid/{name}", {"sha256": sha}, size=len(data)),
            ),
            versions=("1.0",),
        )
        storage.save_page(PageRecord("demo", page, render_project(page, "demo"), 1.0))
        storage.commit(part, sha, name)
        assert storage.flush(30)
    finally:
        storage.close()
    bucket = S3FileStore(s3_config)
    obstore.put(bucket.objects, bucket.key_of(sha, name), data[:-1] + bytes([data[-1] ^ 1]))

    report = _verify(settings)  # the local copy is whole: only the bucket's object can tell
    assert (report.checked, report.corrupt, report.repaired, report.dropped) == (1, 1, 1, 0)
    assert report.exit_status == REPAIRED
    remote = bucket.stat(sha, name)
    assert remote is not None  # uploaded again from the good local copy
    assert hashlib.sha256(b"".join(bucket.read(remote))).hexdigest() == sha
    assert (tmp_path / "a" / "files" / sha[:2] / sha / name).read_bytes() == data
    again = _verify(settings)
    assert (again.checked, again.ok, again.exit_status) == (1, 1, WHOLE)
