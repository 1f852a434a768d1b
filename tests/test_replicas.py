"""Replicas: ``serve`` processes with their own cache directories over one bucket (moto's S3 API
server on loopback, started by the suite: tests/support/s3.py), as users run them.

What one replica stored (a file it fetched, a prefetch pass) the others serve, with the
upstream down or ``--offline``; two replicas filling one file leave one good object; a damaged
object in the bucket is never served; no credential shows in logs or /stats.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import obstore
import pytest

from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy
from tests.support.s3 import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)
from tests.support.wheels import make_wheel
from tests.test_e2e import pip_download

pytestmark = pytest.mark.e2e

JSON = "application/vnd.pypi.simple.v1+json"


def _env(config: S3Config) -> dict[str, str]:
    assert config.endpoint is not None
    return {
        "AWS_ENDPOINT_URL": config.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_REGION": "us-east-1",
    }


def _storage(config: S3Config) -> str:
    return f"s3://{config.bucket}/{config.prefix}"


def _replica(config: S3Config, cache: Path, upstream: FakeUpstream, *args: str) -> SubprocessProxy:
    return SubprocessProxy(
        "--storage",
        _storage(config),
        "--upstream",
        upstream.simple_url,
        *args,
        cache_dir=cache,
        env=_env(config),
    )


def _file_url(proxy: SubprocessProxy, project: str, filename: str) -> str:
    page = httpx.get(f"{proxy.url}/simple/{project}/", headers={"Accept": JSON}, timeout=30)
    assert page.status_code == 200, page.text + proxy.log()
    for item in page.json()["files"]:
        if item["filename"] == filename:
            return str(httpx.URL(f"{proxy.url}/simple/{project}/").join(item["url"]))
    raise AssertionError(f"{filename} not listed: {page.text}")


def _wait_in_bucket(store: S3FileStore, sha256: str, filename: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while store.stat(sha256, filename) is None:
        assert time.monotonic() < deadline, f"{filename} never reached the bucket"
        time.sleep(0.1)


def _wait_queue_empty(*caches: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(list((cache / "uploads").iterdir()) for cache in caches):
        assert time.monotonic() < deadline, "uploads still queued"
        time.sleep(0.1)


def _no_secrets(*texts: str) -> None:
    for text in texts:
        assert SECRET_ACCESS_KEY not in text
        assert ACCESS_KEY_ID not in text


@pytest.fixture(name="demo")
def demo_fixture() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add_dist("demo", make_wheel("demo", "1.0", payload_size=300_000))
        fake.add_dist("demo", make_wheel("demo", "2.0", requires=["helper>=1"]))
        fake.add_dist("helper", make_wheel("helper", "1.5"))
        yield fake


def test_replicas__file_fetched_by_a_served_by_b_upstream_down_and_offline(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    wheel = make_wheel("demo", "1.0", payload_size=300_000)
    bucket = S3FileStore(s3_config)
    with _replica(s3_config, tmp_path / "a", demo) as a:
        got = httpx.get(_file_url(a, "demo", wheel.filename), timeout=30)
        assert got.status_code == 200 and got.content == wheel.content
        _wait_in_bucket(bucket, wheel.sha256, wheel.filename)
        _wait_queue_empty(tmp_path / "a")
        stats = httpx.get(a.url + "/stats", timeout=10)
        assert stats.json()["storage"]["url"] == _storage(s3_config)
        assert stats.json()["storage"]["uploads_pending"] == 0
        _no_secrets(stats.text)
        assert str(s3_config.endpoint) not in stats.text
    demo.stop()
    fetched = demo.count("/")
    with _replica(s3_config, tmp_path / "b", demo) as b:  # online, its upstream down
        got = httpx.get(_file_url(b, "demo", wheel.filename), timeout=30)
        assert got.status_code == 200, got.text + b.log()
        assert hashlib.sha256(got.content).hexdigest() == wheel.sha256
        assert (tmp_path / "b" / "files" / wheel.sha256[:2] / wheel.sha256).is_dir()
        b_log = b.log()
    with _replica(s3_config, tmp_path / "c", demo, "--offline") as c:
        url = _file_url(c, "demo", wheel.filename)
        part = httpx.get(url, headers={"Range": "bytes=100-199"}, timeout=30)  # copied in first
        assert part.status_code == 206 and part.content == wheel.content[100:200]
        got = httpx.get(url, timeout=30)
        assert got.status_code == 200, got.text + c.log()
        assert got.content == wheel.content
        missing = httpx.get(f"{c.url}/simple/helper/", timeout=10)
        assert missing.status_code == 404  # nobody stored it: offline cannot invent it
        c_log = c.log()
    assert demo.count("/") == fetched  # B and C never reached the upstream
    _no_secrets(a.log(), b_log, c_log)


def test_replicas__prefetch_on_a_lets_b_serve_the_mirror_offline(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "prefetch",
            "--storage",
            _storage(s3_config),
            "--upstream",
            demo.simple_url,
            "--cache-dir",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(s3_config), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "a" / "uploads").iterdir())  # all in the bucket at exit
    _no_secrets(result.stdout, result.stderr)
    demo.stop()
    with _replica(s3_config, tmp_path / "b", demo, "--offline") as b:
        done = pip_download(b.url + "/simple/", tmp_path / "dl", "demo", tmp=tmp_path)
        assert done.returncode == 0, done.stderr + b.log()
        names = sorted(p.name for p in (tmp_path / "dl").iterdir())
        assert names == ["demo-2.0-py3-none-any.whl", "helper-1.5-py3-none-any.whl"]
        root = httpx.get(b.url + "/simple/", headers={"Accept": JSON}, timeout=10)
        listed = {p["name"] for p in root.json()["projects"]}
        assert {"demo", "helper"} <= listed  # the poller took every page record
        _no_secrets(b.log())


def test_replicas__two_filling_one_file_at_once(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    wheel = make_wheel("demo", "1.0", payload_size=300_000)
    demo.throttle = 0.01  # both downloads in flight together
    with (
        _replica(s3_config, tmp_path / "a", demo, "--workers", "2") as a,
        _replica(s3_config, tmp_path / "b", demo) as b,
    ):
        urls = [_file_url(p, "demo", wheel.filename) for p in (a, b)]
        bodies: list[bytes] = []

        def get(url: str) -> None:
            bodies.append(httpx.get(url, timeout=60).content)

        threads = [threading.Thread(target=get, args=(u,)) for u in urls * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bodies == [wheel.content] * 4
        bucket = S3FileStore(s3_config)
        _wait_in_bucket(bucket, wheel.sha256, wheel.filename)
        _wait_queue_empty(tmp_path / "a", tmp_path / "b")
        objects = [f for f in bucket.iter_files() if f.filename == wheel.filename]
        assert len(objects) == 1
        assert hashlib.sha256(b"".join(bucket.read(objects[0]))).hexdigest() == wheel.sha256


def test_replicas__damaged_bucket_object_never_served(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    wheel = make_wheel("demo", "1.0", payload_size=300_000)
    bucket = S3FileStore(s3_config)
    with _replica(s3_config, tmp_path / "a", demo) as a:
        assert httpx.get(_file_url(a, "demo", wheel.filename), timeout=30).status_code == 200
        _wait_in_bucket(bucket, wheel.sha256, wheel.filename)
    damaged = bytearray(wheel.content)
    damaged[1000] ^= 0xFF  # same size: only the hash can tell
    obstore.put(bucket.objects, bucket.key_of(wheel.sha256, wheel.filename), bytes(damaged))
    with _replica(s3_config, tmp_path / "b", demo, "--offline") as b:
        url = _file_url(b, "demo", wheel.filename)
        try:  # streamed as it is checked: the transfer is cut before its last chunk
            got = httpx.get(url, timeout=30)
            assert got.status_code != 200, "a damaged object was sent whole"
        except httpx.RemoteProtocolError:
            pass
        assert "damaged" in b.log()
        again = httpx.get(url, timeout=30)
        assert again.status_code in (404, 503)  # dropped: not in this mirror any more
    assert bucket.stat(wheel.sha256, wheel.filename) is None  # deleted from the bucket
    with _replica(s3_config, tmp_path / "c", demo) as c:  # online: fetched again, right
        got = httpx.get(_file_url(c, "demo", wheel.filename), timeout=30)
        assert got.status_code == 200 and got.content == wheel.content
        _wait_in_bucket(bucket, wheel.sha256, wheel.filename)
    good = bucket.stat(wheel.sha256, wheel.filename)
    assert good is not None
    assert hashlib.sha256(b"".join(bucket.read(good))).hexdigest() == wheel.sha256


def test_replicas__redirect_to_a_presigned_url(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    wheel = make_wheel("demo", "1.0", payload_size=300_000)
    bucket = S3FileStore(s3_config)
    with _replica(s3_config, tmp_path / "a", demo) as a:
        assert httpx.get(_file_url(a, "demo", wheel.filename), timeout=30).status_code == 200
        _wait_in_bucket(bucket, wheel.sha256, wheel.filename)
    env = {"PYPI_PROXY_S3_REDIRECT": "true", "PYPI_PROXY_S3_REDIRECT_EXPIRY": "60"}
    with SubprocessProxy(
        "--storage",
        _storage(s3_config),
        "--offline",
        cache_dir=tmp_path / "b",
        env={**_env(s3_config), **env},
    ) as b:
        url = _file_url(b, "demo", wheel.filename)
        answer = httpx.get(url, timeout=30)
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert location.startswith(str(s3_config.endpoint))
        assert SECRET_ACCESS_KEY not in location  # signed with it, never carrying it
        assert "X-Amz-Expires=60" in location
        followed = httpx.get(url, timeout=30, follow_redirects=True)
        assert followed.status_code == 200 and followed.content == wheel.content
        assert not (tmp_path / "b" / "files" / wheel.sha256[:2]).exists()  # no local copy
        _no_secrets(b.log())


def test_replicas__unreachable_bucket_is_one_line_at_start(tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens there
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--storage",
            "s3://nowhere-bucket/m",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "cannot use the storage s3://nowhere-bucket/m" in result.stderr
    assert "Traceback" not in result.stderr
    _no_secrets(result.stderr)


def test_replicas__json_api_and_root_fetched_by_a_served_by_b_offline(
    s3_config: S3Config, tmp_path: Path, demo: FakeUpstream
) -> None:
    with _replica(s3_config, tmp_path / "a", demo) as a:
        document = httpx.get(f"{a.url}/pypi/demo/json", timeout=30)
        assert document.status_code == 200, document.text + a.log()
        root = httpx.get(f"{a.url}/simple/", headers={"Accept": JSON}, timeout=30)
        assert root.status_code == 200
        assert "helper" in {p["name"] for p in root.json()["projects"]}
    with _replica(s3_config, tmp_path / "b", demo, "--offline") as b:
        again = httpx.get(f"{b.url}/pypi/demo/json", timeout=30)
        assert again.status_code == 200, again.text + b.log()
        assert again.json()["info"] == document.json()["info"]
        assert [u["filename"] for u in again.json()["urls"]] == [
            u["filename"] for u in document.json()["urls"]
        ]
        listed = httpx.get(f"{b.url}/simple/", headers={"Accept": JSON}, timeout=30)
        assert listed.status_code == 200
        # A's root (helper included, though B holds no page of it), not B's own pages only.
        assert {p["name"] for p in listed.json()["projects"]} == {
            p["name"] for p in root.json()["projects"]
        }
        _no_secrets(b.log())
