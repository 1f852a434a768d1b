from __future__ import annotations

import fcntl
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

WHEEL = "/files/demo/demo-1.0-py3-none-any.whl"


def _proxy(tmp_path: Path, fake: FakeUpstream, **overrides: object) -> ThreadedProxy:
    values: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 0,
        "connect_timeout": 1,
        "read_timeout": 3,
    }
    values.update(overrides)
    return ThreadedProxy(load_settings(None, {}, values))


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "files").rglob("*") if p.is_file())


def test_file__miss_then_hit(proxy: ThreadedProxy, upstream: FakeUpstream) -> None:
    built = make_wheel("demo", "1.0")
    first = httpx.get(proxy.url + WHEEL, headers={"accept-encoding": "gzip"})
    assert first.status_code == 200
    assert first.content == built.content
    assert "content-encoding" not in first.headers
    second = httpx.get(proxy.url + WHEEL, headers={"accept-encoding": "gzip"})
    assert second.content == built.content
    assert "content-encoding" not in second.headers
    assert second.headers["accept-ranges"] == "bytes"
    assert "immutable" in second.headers["cache-control"]
    assert upstream.count("/files/demo/demo-1.0") == 1
    path = stored_files(proxy.settings.cache_dir)[0]
    assert path.parent.name == built.sha256 and path.name == built.filename
    stats = httpx.get(proxy.url + "/stats").json()
    assert stats["files"] == {"hits": 1, "misses": 1}
    assert stats["cache"]["files"] == 1 and stats["cache"]["bytes"] == len(built.content)
    assert stats["bytes_served"] >= 2 * len(built.content)


def test_metadata__pep658(proxy: ThreadedProxy) -> None:
    built = make_wheel("demo", "1.0")
    response = httpx.get(proxy.url + WHEEL + ".metadata")
    assert response.status_code == 200
    assert response.content == built.metadata
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/files/demo/demo-9.9-py3-none-any.whl",
        "/files/demo/demo-1.0.tar.gz",
        "/files/nope/nope-1.0.tar.gz",
        "/files/helper/demo-1.0-py3-none-any.whl",
    ],
)
def test_file__only_listed_files(proxy: ThreadedProxy, path: str) -> None:
    assert httpx.get(proxy.url + path).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/files/demo/..%2F..%2Fetc%2Fpasswd",
        "/files/demo/%2e%2e",
        "/files/demo/.hidden",
        "/files/-x-/demo-1.0-py3-none-any.whl",
        "/files/demo/a%00b.whl",
    ],
)
def test_file__hostile_paths_are_4xx(proxy: ThreadedProxy, path: str) -> None:
    response = httpx.get(proxy.url + path)
    assert 400 <= response.status_code < 500
    assert httpx.get(proxy.url + "/health").status_code == 200


def test_file__head_and_ranges(proxy: ThreadedProxy) -> None:
    content = make_wheel("demo", "1.0").content
    size = len(content)
    head = httpx.head(proxy.url + WHEEL)  # a miss: waits for the verified file
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == size
    assert head.content == b""
    cases = {
        "bytes=0-9": content[0:10],
        "bytes=10-": content[10:],
        "bytes=-22": content[-22:],
        f"bytes=5-{size * 2}": content[5:],
    }
    for header, expected in cases.items():
        response = httpx.get(proxy.url + WHEEL, headers={"range": header})
        assert response.status_code == 206, header
        assert response.content == expected, header
        assert response.headers["content-range"].endswith(f"/{size}")
    bad = httpx.get(proxy.url + WHEEL, headers={"range": f"bytes={size}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{size}"
    etag = head.headers["etag"]
    same = httpx.get(proxy.url + WHEEL, headers={"range": "bytes=0-0", "if-range": etag})
    assert same.status_code == 206
    other = httpx.get(proxy.url + WHEEL, headers={"range": "bytes=0-0", "if-range": '"other"'})
    assert other.status_code == 200 and other.content == content


def test_file__range_on_a_miss(proxy: ThreadedProxy) -> None:
    content = make_wheel("demo", "2.0", requires=["helper>=1"]).content
    response = httpx.get(
        proxy.url + "/files/demo/demo-2.0-py3-none-any.whl", headers={"range": "bytes=-10"}
    )
    assert response.status_code == 206
    assert response.content == content[-10:]


def test_file__corrupt_upstream_fails_transfer_and_keeps_nothing(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.corrupt_files = True
    with _proxy(tmp_path, upstream) as proxy:
        with pytest.raises(httpx.HTTPError):
            httpx.get(proxy.url + WHEEL).raise_for_status()
        time.sleep(0.2)
        assert stored_files(tmp_path / "cache") == []
        assert list((tmp_path / "cache" / "tmp").glob("*.part")) == []
        assert httpx.get(proxy.url + "/stats").json()["integrity_errors"] == 1
        upstream.corrupt_files = False
        good = httpx.get(proxy.url + WHEEL)
        assert hashlib.sha256(good.content).hexdigest() == make_wheel("demo", "1.0").sha256


def test_file__truncated_upstream_fails_transfer(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.truncate_files = True
    with _proxy(tmp_path, upstream) as proxy:
        with pytest.raises(httpx.HTTPError):
            httpx.get(proxy.url + WHEEL).raise_for_status()
        time.sleep(0.2)
        assert stored_files(tmp_path / "cache") == []


def test_file__upstream_down_is_502_not_a_hang(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream) as proxy:
        httpx.get(proxy.url + "/simple/demo/")
        upstream.down = True
        response = httpx.get(proxy.url + WHEEL, timeout=10)
        assert response.status_code == 502


def test_file__concurrent_misses_share_one_download(tmp_path: Path, upstream: FakeUpstream) -> None:
    big = make_wheel("big", "1.0", payload_size=4 * 1024 * 1024)
    upstream.add_dist("big", big)
    path = f"/files/big/{big.filename}"
    with _proxy(tmp_path, upstream) as proxy:
        httpx.get(proxy.url + "/simple/big/")
        upstream.delay = 0.3
        with ThreadPoolExecutor(12) as pool:
            bodies = list(
                pool.map(lambda _: httpx.get(proxy.url + path, timeout=30).content, range(12))
            )
        assert all(body == big.content for body in bodies)
        assert upstream.count(path) == 1


def test_file__client_disconnect_does_not_abort_fill(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    big = make_wheel("big", "1.0", payload_size=8 * 1024 * 1024)
    upstream.add_dist("big", big)
    with _proxy(tmp_path, upstream) as proxy:
        with httpx.stream("GET", proxy.url + f"/files/big/{big.filename}") as response:
            next(response.iter_raw(1024))
        deadline = time.monotonic() + 10
        while not stored_files(tmp_path / "cache") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.name for p in stored_files(tmp_path / "cache")] == [big.filename]


def test_offline__serves_cache_and_404s_the_rest(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _proxy(tmp_path, upstream) as proxy:
        httpx.get(proxy.url + WHEEL)
    upstream.reset_log()
    with _proxy(tmp_path, upstream, offline=True, index_ttl=0) as proxy:
        assert httpx.get(proxy.url + WHEEL).content == make_wheel("demo", "1.0").content
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        missing = httpx.get(proxy.url + "/simple/helper/")
        assert missing.status_code == 404 and "offline" in missing.text
        not_held = httpx.get(proxy.url + "/files/demo/demo-2.0-py3-none-any.whl")
        assert not_held.status_code == 404 and "offline" in not_held.text
    assert upstream.requests == []


def test_size_cap__evicts_least_recently_used(tmp_path: Path, upstream: FakeUpstream) -> None:
    wheels = [make_wheel("big", f"{i}.0", payload_size=300_000) for i in range(4)]
    for built in wheels:
        upstream.add_dist("big", built)
    with _proxy(tmp_path, upstream, max_cache_size=700_000) as proxy:
        for built in wheels[:2]:
            httpx.get(proxy.url + f"/files/big/{built.filename}")
        time.sleep(1.1)  # atime has a one-second grain on some filesystems
        for built in wheels[2:]:
            httpx.get(proxy.url + f"/files/big/{built.filename}")
            time.sleep(0.3)
        names = {p.name for p in stored_files(tmp_path / "cache")}
        assert wheels[3].filename in names
        assert wheels[0].filename not in names
        stats = httpx.get(proxy.url + "/stats").json()
        assert stats["cache"]["bytes"] <= 700_000
        assert stats["evicted"]["files"] >= 1


def test_crash_leftovers__swept_at_start(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A crashed fill's part is removed at start and the file is then fetched whole; a part
    whose lock another writer still holds is left alone; nothing else in tmp/ is touched."""
    built = make_wheel("demo", "1.0")
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    orphan = tmp / f"{built.sha256}.123-abcd.part"  # what a killed fill of this very file leaves
    orphan.write_bytes(built.content[:100])
    busy = tmp / f"{'b' * 64}.456-efgh.part"
    busy.write_bytes(b"another worker is still writing this")
    other = tmp / "notes.txt"
    other.write_bytes(b"not a part")
    with (tmp / f"{'b' * 64}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file: lock_held() sees it as taken
        with _proxy(tmp_path, upstream) as proxy:
            assert not orphan.exists()
            assert busy.read_bytes() == b"another worker is still writing this"
            assert other.read_bytes() == b"not a part"
            response = httpx.get(proxy.url + WHEEL)
            assert response.status_code == 200
            assert response.content == built.content
    assert [p.name for p in stored_files(tmp_path / "cache")] == [built.filename]
    assert sorted(p.name for p in tmp.glob("*.part")) == [busy.name]


def test_allowed_file_hosts__links_elsewhere_dropped(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # The fake links files on 127.0.0.1; reached as localhost, those are another host.
    via_name = upstream.simple_url.replace("127.0.0.1", "localhost")
    with _proxy(tmp_path, upstream, upstream=via_name, allowed_file_hosts=["files.test"]) as p:
        page = httpx.get(p.url + "/simple/demo/", headers={"accept": "application/*"}).json()
        assert page["files"] == []
        assert httpx.get(p.url + WHEEL).status_code == 404
    # An origin is host and port: a bare host means its default port, so name the fake's.
    port = upstream.base_url.rsplit(":", 1)[1]
    allowed = [f"127.0.0.*:{port}"]
    with _proxy(tmp_path, upstream, upstream=via_name, allowed_file_hosts=allowed) as p:
        page = httpx.get(p.url + "/simple/demo/", headers={"accept": "application/*"}).json()
        assert len(page["files"]) == 2
        # 127.0.0.1 is loopback, but it is where the upstream itself (localhost) answers.
        assert httpx.get(p.url + WHEEL).status_code == 200
