"""Upstream faults and a full disk: clients get stale pages or a clean error, never wrong
bytes, and no corrupt or partial entry is kept."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.settings import Settings, load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, stored
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

WHEEL = "/files/demo/demo-1.0-py3-none-any.whl"


def configure(cache: Path, fake: FakeUpstream, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "upstream": fake.simple_url,
        "cache_dir": cache,
        "retries": 2,
        "connect_timeout": 1,
        "read_timeout": 2,
        "breaker_threshold": 0,
    }
    values.update(overrides)
    return load_settings(None, {}, values)


def nothing_partial(cache: Path) -> bool:
    return not list((cache / "tmp").glob("*.part")) and all_whole(cache)


def fetch_whole(url: str) -> tuple[int, int | None, bytes, bool]:
    """Status, announced Content-Length, the bytes that arrived, and whether the body ended
    as announced (False: the connection was cut mid-body)."""
    received = b""
    with httpx.stream("GET", url, timeout=10) as response:
        length = response.headers.get("content-length")
        try:
            for chunk in response.iter_raw():
                received += chunk
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return response.status_code, int(length) if length else None, received, False
        return response.status_code, int(length) if length else None, received, True


@pytest.mark.parametrize(
    "fault",
    ["corrupt_files", "truncate_files", "wrong_length"],
)
def test_file_faults__transfer_fails_nothing_kept(
    tmp_path: Path, upstream: FakeUpstream, fault: str
) -> None:
    """The client sees a failed transfer, in one of the two forms a client can tell: a 502
    before any byte, or a 200 with the index's Content-Length cut short. After the fault
    clears, the right bytes are fetched anew (nothing bad was kept)."""
    built = make_wheel("demo", "1.0")
    setattr(upstream, fault, True)
    with ThreadedProxy(configure(tmp_path / "c", upstream)) as proxy:
        for _attempt in range(2):  # a second try must not be served a kept copy
            status, length, received, whole = fetch_whole(proxy.url + WHEEL)
            if status == 200:
                assert length == len(built.content), fault
                assert not whole and len(received) < length, (fault, len(received))
                assert received == built.content[: len(received)] or fault == "corrupt_files"
            else:
                assert status == 502 and whole, (fault, status)
                assert b"could not fetch" in received, received
            assert stored(tmp_path / "c") == {}
            assert nothing_partial(tmp_path / "c")
        assert httpx.get(proxy.url + "/health").status_code == 200
        setattr(upstream, fault, False)
        again = httpx.get(proxy.url + WHEEL, timeout=10)
        assert again.status_code == 200 and again.content == built.content
    assert stored(tmp_path / "c") == {built.filename: built.sha256}
    assert nothing_partial(tmp_path / "c")


def test_bursts_of_5xx_and_429__absorbed_by_retries(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ThreadedProxy(configure(tmp_path / "c", upstream)) as proxy:
        upstream.fail_next = 2
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        upstream.fail_next, upstream.fail_status = 2, 429
        assert httpx.get(proxy.url + WHEEL).status_code == 200
        upstream.fail_next, upstream.fail_status = 10, 500
        response = httpx.get(proxy.url + "/simple/helper/")
        assert response.status_code == 502
        assert "unavailable" in response.text


def test_refusing_upstream__stale_or_clean_error(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path / "c", upstream, index_ttl=0, retries=0)
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
    upstream.stop()  # connection refused from now on
    with ThreadedProxy(settings) as proxy:
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        assert httpx.get(proxy.url + "/simple/helper/").status_code == 502
        assert httpx.get(proxy.url + WHEEL).status_code == 502


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs, made and removed by the test (needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(path: Path) -> None:
    with (path / "ballast").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_disk_full__fails_cleanly_and_keeps_serving(
    small_disk: Path, upstream: FakeUpstream
) -> None:
    big = make_wheel("big", "1.0", payload_size=8 * 1024 * 1024)
    upstream.add_dist("big", big)
    cache = small_disk / "cache"
    with ThreadedProxy(configure(cache, upstream, index_ttl=0)) as proxy:
        demo = httpx.get(proxy.url + WHEEL)
        assert demo.status_code == 200
        assert httpx.get(proxy.url + "/simple/big/").status_code == 200
        try:
            response = httpx.get(proxy.url + f"/files/big/{big.filename}", timeout=30)
            assert response.status_code != 200
        except httpx.HTTPError:
            pass
        assert big.filename not in stored(cache)
        assert nothing_partial(cache)
        fill_disk(small_disk)
        os.sync()
        # Pages still answer (the new copy cannot be stored, the answer is still right) ...
        page = httpx.get(proxy.url + "/simple/helper/")
        assert page.status_code == 200
        assert httpx.get(proxy.url + "/simple/demo/").status_code == 200
        # ... cached files are still served, and a new file is a clean failure.
        assert httpx.get(proxy.url + WHEEL).content == demo.content
        try:
            response = httpx.get(proxy.url + "/files/helper/helper-1.5-py3-none-any.whl")
            assert response.status_code != 200
        except httpx.HTTPError:
            pass
        assert httpx.get(proxy.url + "/health").status_code == 200
        assert httpx.get(proxy.url + "/stats").status_code == 200
    assert nothing_partial(cache)


def test_upstream_stalls_mid_body__transfer_fails_nothing_kept(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    big = make_wheel("big", "1.0", payload_size=1024 * 1024)
    upstream.add_dist("big", big)
    settings = configure(tmp_path / "c", upstream, read_timeout=0.3, retries=0)
    with ThreadedProxy(settings) as proxy:
        httpx.get(proxy.url + "/simple/big/")
        upstream.throttle = 1.0  # a second between chunks: past the read timeout
        try:
            response = httpx.get(proxy.url + f"/files/big/{big.filename}", timeout=30)
            assert response.status_code != 200
        except httpx.HTTPError:
            pass
        upstream.throttle = 0
        assert big.filename not in stored(tmp_path / "c")
        assert nothing_partial(tmp_path / "c")
        again = httpx.get(proxy.url + f"/files/big/{big.filename}", timeout=30)
        assert again.content == big.content
