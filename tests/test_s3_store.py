"""The S3 file store against a real S3 API server on loopback (moto's, tests/support/s3.py).

Two S3FileStore objects over one bucket stand for two replicas: they share nothing but the
bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import obstore
import pytest

from proxy.errors import SettingsError, StoreUnavailable
from proxy.filestore import StoredFile
from proxy.s3config import S3Config, s3_config_from
from proxy.s3store import S3FileStore
from tests.support.s3 import (
    SECRET_ACCESS_KEY,
    S3Server,
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)

SECRET_BITS = (SECRET_ACCESS_KEY, "AKIDTESTPROXY1234567")


def _file(tmp_path: Path, name: str, size: int) -> tuple[Path, str, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), data


def _stream(store: S3FileStore, sha: str, name: str, start: int, end: int) -> bytes:
    stored = store.stat(sha, name)
    assert stored is not None

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in store.stream(stored, start, end)])

    return anyio.run(collect)


def test_s3_store__put_stat_read_stream(s3_config: S3Config, tmp_path: Path) -> None:
    store = S3FileStore(s3_config)
    source, sha, data = _file(tmp_path, "demo-1.0-py3-none-any.whl", 300_000)
    assert store.stat(sha, source.name) is None
    stored, created = store.put(source, sha, source.name)
    assert created
    assert source.exists()  # a copy: the local file stays the caller's
    assert (stored.sha256, stored.filename, stored.size) == (sha, source.name, len(data))
    assert stored.path is None
    assert stored.location == (
        f"s3://{s3_config.bucket}/mirror/files/{sha[:2]}/{sha}/{source.name}"
    )
    again = store.stat(sha, source.name)
    assert again is not None and again.size == len(data)
    assert b"".join(store.read(stored, chunk_size=65536)) == data
    assert _stream(store, sha, source.name, 0, len(data)) == data
    assert _stream(store, sha, source.name, 1000, 1001) == data[1000:1001]
    assert _stream(store, sha, source.name, len(data) - 7, len(data)) == data[-7:]
    assert _stream(store, sha, source.name, 5, 5) == b""


def test_s3_store__second_replica_never_clobbers(s3_config: S3Config, tmp_path: Path) -> None:
    first, second = S3FileStore(s3_config), S3FileStore(s3_config)
    source, sha, _ = _file(tmp_path, "demo-1.0.tar.gz", 5000)
    _, created = first.put(source, sha, source.name)
    before = obstore.head(first.objects, first.key_of(sha, source.name))
    _, created_again = second.put(source, sha, source.name)
    after = obstore.head(first.objects, first.key_of(sha, source.name))
    assert (created, created_again) == (True, False)
    assert after["e_tag"] == before["e_tag"] and after["last_modified"] == before["last_modified"]


@pytest.mark.parametrize("size", [40_000, 21 * 1024 * 1024])
def test_s3_store__racing_replicas_store_once(
    s3_config: S3Config, tmp_path: Path, size: int
) -> None:
    """Replicas storing one file at once: exactly one creates it, the object is whole. The
    large size goes multipart + conditional copy, which must keep the precondition."""
    source, sha, data = _file(tmp_path, "big-1.0-py3-none-any.whl", size)
    stores = [S3FileStore(s3_config, part_size=5 * 1024 * 1024) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def store_it(store: S3FileStore) -> None:
        barrier.wait()
        results.append(store.put(source, sha, source.name)[1])

    threads = [threading.Thread(target=store_it, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    stored = stores[0].stat(sha, source.name)
    assert stored is not None and stored.size == size
    assert hashlib.sha256(b"".join(stores[1].read(stored))).hexdigest() == sha
    assert len(data) == size
    # no staging object left behind by any of them
    assert list(obstore.list(stores[0].objects, "tmp").collect()) == []


def test_s3_store__large_file_does_not_replace_existing(
    s3_config: S3Config, tmp_path: Path
) -> None:
    """A large put over an existing key is refused by the store, not done and then undone."""
    store = S3FileStore(s3_config, single_put_limit=1024, part_size=5 * 1024 * 1024)
    source, sha, _ = _file(tmp_path, "large-1.0.tar.gz", 6 * 1024 * 1024)
    key = store.key_of(sha, source.name)
    obstore.put(store.objects, key, b"first writer's bytes")  # as if stored by someone else
    before = obstore.head(store.objects, key)
    stored, created = store.put(source, sha, source.name)
    assert not created
    assert stored.size == len(b"first writer's bytes")  # theirs, left alone
    assert obstore.head(store.objects, key)["e_tag"] == before["e_tag"]


def test_s3_store__stream_cut_when_object_shrinks(s3_config: S3Config, tmp_path: Path) -> None:
    """Bytes asked by the size the store reported: an object shorter now (replaced by hand)
    must cut the transfer, never end it early as if whole."""
    store = S3FileStore(s3_config)
    source, sha, _ = _file(tmp_path, "demo-1.0.zip", 10_000)
    stored, _ = store.put(source, sha, source.name)
    obstore.put(store.objects, store.key_of(sha, source.name), b"short")

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in store.stream(stored, 0, stored.size)])

    with pytest.raises(OSError, match="gave 5 of 10000 bytes"):
        anyio.run(collect)


def test_s3_store__remove(s3_config: S3Config, tmp_path: Path) -> None:
    store = S3FileStore(s3_config, touch_interval=0)
    source, sha, data = _file(tmp_path, "demo-2.0.whl", 1234)
    stored, _ = store.put(source, sha, source.name)
    store.touch(stored, time.time())
    assert list(obstore.list(store.objects, "atime").collect())
    assert store.remove(sha, source.name) == len(data)
    assert store.stat(sha, source.name) is None
    assert list(obstore.list(store.objects, "atime").collect()) == []  # its marker went too
    assert store.remove(sha, source.name) == 0
    with pytest.raises(FileNotFoundError):  # an OSError: what verify and scrub expect of read
        list(store.read(stored))


@pytest.mark.parametrize(
    ("sha", "name"),
    [
        ("../../../etc", "passwd"),
        ("a" * 64, "../../lease/prefetch"),
        ("a" * 64, "sub/name.whl"),
        ("A" * 64, "x.whl"),
        ("a" * 63, "x.whl"),
        ("a" * 64, ".."),
    ],
)
def test_s3_store__names_outside_the_layout(
    s3_config: S3Config, tmp_path: Path, sha: str, name: str
) -> None:
    store = S3FileStore(s3_config)
    assert store.stat(sha, name) is None
    assert store.remove(sha, name) == 0
    source = tmp_path / "x"
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a storable file"):
        store.put(source, sha, name)


def test_s3_store__iter_files_skips_foreign_keys(s3_config: S3Config, tmp_path: Path) -> None:
    store = S3FileStore(s3_config)
    names = []
    for i in range(3):
        source, sha, _ = _file(tmp_path, f"p-{i}.whl", 100 + i)
        store.put(source, sha, source.name)
        names.append((sha, source.name))
    sha = names[0][0]
    for foreign in (
        f"files/{sha[:2]}/{sha}/deeper/x.whl",
        f"files/zz/{sha}/x.whl",
        "files/ab/not-a-digest/x.whl",
        "files/stray",
    ):
        obstore.put(store.objects, foreign, b"junk")
    listed = sorted((s.sha256, s.filename) for s in store.iter_files())
    assert listed == sorted(names)


def test_s3_store__access_marker_seen_by_other_replica(s3_config: S3Config, tmp_path: Path) -> None:
    """An access recorded by one replica orders eviction on another (no shared memory)."""
    serving = S3FileStore(s3_config, touch_interval=1)  # a file just stored needs no marker
    source, sha, _ = _file(tmp_path, "hot.whl", 10)
    cold_source, cold_sha, _ = _file(tmp_path, "cold.whl", 10)
    hot, _ = serving.put(source, sha, source.name)
    serving.put(cold_source, cold_sha, cold_source.name)
    time.sleep(1.1)  # LastModified has one-second resolution
    serving.touch(hot, time.time())
    evicting = S3FileStore(s3_config)
    by_name = {s.filename: s for s in evicting.iter_files()}
    assert by_name["hot.whl"].atime > by_name["hot.whl"].mtime
    assert by_name["cold.whl"].atime == by_name["cold.whl"].mtime
    assert min(by_name.values(), key=lambda s: s.atime).filename == "cold.whl"


def test_s3_store__touch_is_coarse(s3_config: S3Config, tmp_path: Path) -> None:
    store = S3FileStore(s3_config, touch_interval=3600)
    source, sha, _ = _file(tmp_path, "x.whl", 10)
    stored, _ = store.put(source, sha, source.name)
    now = time.time() + 7200  # well after it was stored
    store.touch(stored, now)
    obstore.delete(store.objects, "atime/" + store.key_of(sha, source.name)[len("files/") :])
    store.touch(stored, now + 60)  # within the interval: no second write
    assert list(obstore.list(store.objects, "atime").collect()) == []
    store.touch(stored, now + 3601)
    assert len(list(obstore.list(store.objects, "atime").collect())) == 1


def test_s3_store__presigned_get(s3_config: S3Config, tmp_path: Path) -> None:
    store = S3FileStore(s3_config)
    source, sha, data = _file(tmp_path, "demo-1.0.whl", 2048)
    stored, _ = store.put(source, sha, source.name)
    url = store.presign(stored, 60)
    assert url is not None and SECRET_ACCESS_KEY not in url
    assert httpx.get(url, timeout=10).content == data


def test_s3_store__sweep_staging(s3_config: S3Config) -> None:
    store = S3FileStore(s3_config)
    obstore.put(store.objects, "tmp/crashed-upload", b"partial")
    assert store.sweep_staging(older_than=3600) == 0  # could still be in flight
    assert store.sweep_staging(older_than=3600, now=time.time() + 7200) == 1
    assert list(obstore.list(store.objects, "tmp").collect()) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_s3_store__credentials_never_shown(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in location, repr, error messages or logs, whatever fails."""
    caplog.set_level(logging.DEBUG)
    down = S3Config(
        bucket="mirror-bucket",
        prefix="p",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        access_key_id="AKIDTESTPROXY1234567",
        secret_access_key=SECRET_ACCESS_KEY,
    )
    missing_bucket = s3_server.config("no-such-bucket-here")
    source, sha, _ = _file(tmp_path, "x.whl", 10)
    shown: list[str] = [repr(down), repr(missing_bucket)]
    for config in (down, missing_bucket):
        store = S3FileStore(config, retries=0, retry_timeout=1, connect_timeout=1)
        shown.append(repr(store))
        calls: list[Callable[[], object]] = [
            store.check,
            functools.partial(store.put, source, sha, "x.whl"),
            functools.partial(list, store.iter_files()),
        ]
        if config is down:
            calls.append(functools.partial(store.stat, sha, "x.whl"))
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert caught.value.__cause__ is None  # the store's own message is not chained
            shown.append(str(caught.value))
    text = "\n".join([*shown, caplog.text])
    assert "object store: HEAD files/" in text and "object store: LIST files/" in text
    assert "(HTTP 404)" in text  # the missing bucket's status is told
    for secret in SECRET_BITS:
        assert secret not in text
    assert "127.0.0.1" not in "\n".join(shown[2:])  # no endpoint in our messages


def test_s3_store__failed_touch_is_logged_not_raised(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = S3FileStore(s3_server.config("no-such-bucket-here"), retries=0, touch_interval=0)
    stored = StoredFile("a" * 64, "x.whl", 1, 0.0, 0.0, "s3://x")
    store.touch(stored, time.time())
    assert "access marker" in caplog.text
    assert SECRET_ACCESS_KEY not in caplog.text


# -- the storage URL and the AWS variables ---------------------------------------------------


def test_s3_config_from__url_env_and_settings() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
    }
    config = s3_config_from("s3://mirror-bucket/a/b/", env)
    assert (config.bucket, config.prefix, config.endpoint, config.region) == (
        "mirror-bucket",
        "a/b",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert (config.access_key_id, config.secret_access_key) == ("env-id", "env-secret")
    assert config.allow_http
    assert config.url == "s3://mirror-bucket/a/b"
    assert "env-secret" not in repr(config) and "env-id" not in repr(config)
    explicit = s3_config_from(
        "s3://mirror-bucket",
        env,
        endpoint="https://objects.example.test",
        region="auto",
        access_key_id="flag-id",
        secret_access_key="flag-secret",
    )
    assert (explicit.prefix, explicit.endpoint, explicit.region) == (
        "",
        "https://objects.example.test",
        "auto",
    )
    assert explicit.secret_access_key == "flag-secret" and not explicit.allow_http
    bare = s3_config_from("s3://mirror-bucket/p", {})
    assert (bare.endpoint, bare.region, bare.access_key_id) == (None, "us-east-1", None)


@pytest.mark.parametrize(
    "url",
    [
        "s3://ab/prefix",  # bucket too short
        "s3://Mirror/prefix",  # uppercase
        "s3://mirror..bucket/p",
        "s3://-mirror/p",
        "s3://mirror-bucket/../escape",
        "s3://mirror-bucket/a/./b",
        "s3://mirror-bucket/a b",
        "s3://id:secret-in-url@mirror-bucket/p",
        "s3://mirror-bucket:9000/p",
        "s3://mirror-bucket/p?x=1",
        "https://mirror-bucket/p",
        "s3:///p",
    ],
)
def test_s3_config_from__refuses(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^storage: ") as caught:
        s3_config_from(url, {})
    assert "secret-in-url" not in str(caught.value)


def test_s3_config_from__refuses_credentials_in_endpoint() -> None:
    with pytest.raises(SettingsError, match="AWS_ENDPOINT_URL") as caught:
        s3_config_from("s3://mirror-bucket/p", {"AWS_ENDPOINT_URL": "http://u:pw-x@host:9000"})
    assert "pw-x" not in str(caught.value)


def test_s3_store__prefixes_do_not_mix(s3_config: S3Config, tmp_path: Path) -> None:
    """Two mirrors in one bucket under different prefixes never see each other's files."""
    ours = S3FileStore(s3_config)
    theirs = S3FileStore(dataclasses.replace(s3_config, prefix="mirror-b"))
    source, sha, _ = _file(tmp_path, "demo-1.0.whl", 100)
    ours.put(source, sha, source.name)
    assert theirs.stat(sha, source.name) is None
    assert list(theirs.iter_files()) == []
    assert theirs.remove(sha, source.name) == 0
    assert ours.stat(sha, source.name) is not None
