"""A hostile or compromised upstream must not steer the proxy to internal addresses, nor get
the index's credentials sent anywhere but the index's own origin (issue 8, item 1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.proxy_server import ThreadedProxy

SECRET = b"INTERNAL-SECRET-DATA"
WHEEL = "evil-1.0-py3-none-any.whl"
PAGE = "/simple/evil/"
FILE = f"/files/evil/{WHEEL}"


def page_linking(url: str) -> RawAnswer:
    """A project page with one file, no hash (so nothing would catch a swapped body)."""
    body = {
        "meta": {"api-version": "1.1", "_last-serial": 7},
        "name": "evil",
        "files": [{"filename": WHEEL, "url": url, "hashes": {}}],
        "versions": ["1.0"],
    }
    headers = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
    return RawAnswer(200, headers, json.dumps(body).encode())


@pytest.fixture
def internal() -> Iterator[FakeUpstream]:
    """Something on this machine that must never be reached through the proxy."""
    with FakeUpstream() as fake:
        fake.raw_routes["/internal/admin"] = RawAnswer(body=SECRET)
        fake.raw_routes[FILE] = RawAnswer(body=SECRET)
        yield fake


@pytest.fixture
def internal_2() -> Iterator[FakeUpstream]:
    """The same on another loopback address, 127.0.0.2."""
    with FakeUpstream(host="127.0.0.2") as fake:
        fake.raw_routes["/internal/admin"] = RawAnswer(body=SECRET)
        fake.raw_routes[FILE] = RawAnswer(body=SECRET)
        yield fake


def _proxy(tmp_path: Path, upstream_url: str, **overrides: object) -> ThreadedProxy:
    from proxy.settings import load_settings

    values: dict[str, object] = {
        "upstream": upstream_url,
        "cache_dir": tmp_path / "cache",
        "retries": 0,
        "connect_timeout": 2,
        "read_timeout": 5,
    }
    values.update(overrides)
    return ThreadedProxy(load_settings(None, {}, values))


def stored(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache" / "files").rglob("*") if p.is_file()]


def _port(fake: FakeUpstream) -> str:
    return fake.base_url.rsplit(":", 1)[1]


def _assert_refused(proxy: ThreadedProxy, tmp_path: Path, *internals: FakeUpstream) -> None:
    response = httpx.get(proxy.url + FILE, timeout=20)
    assert response.status_code in (404, 502), response.text
    assert SECRET not in response.content
    for fake in internals:
        assert fake.requests == [], "the proxy connected to an internal address"
    assert stored(tmp_path) == []


@pytest.mark.parametrize("allowed", [[], ["own"]], ids=["any-host", "allowed-host"])
@pytest.mark.parametrize("where", ["other-port", "127.0.0.2"])
def test_redirect_to_internal__not_followed(
    tmp_path: Path,
    upstream: FakeUpstream,
    internal: FakeUpstream,
    internal_2: FakeUpstream,
    allowed: list[str],
    where: str,
) -> None:
    target = internal if where == "other-port" else internal_2
    upstream.raw_routes[PAGE] = page_linking(upstream.base_url + FILE)
    upstream.raw_routes[FILE] = RawAnswer(302, {"Location": target.base_url + "/internal/admin"})
    hosts = [f"127.0.0.1:{_port(upstream)}"] if allowed else []
    with _proxy(tmp_path, upstream.simple_url, allowed_file_hosts=hosts) as proxy:
        _assert_refused(proxy, tmp_path, internal, internal_2)
        assert upstream.count(FILE) == 1  # the allowed hop was asked, the next one never
        assert httpx.get(proxy.url + "/health").status_code == 200


@pytest.mark.parametrize("allowed", [[], ["127.0.0.1"]], ids=["any-host", "index-host"])
@pytest.mark.parametrize("where", ["other-port", "127.0.0.2"])
def test_link_to_internal_address__refused(
    tmp_path: Path,
    upstream: FakeUpstream,
    internal: FakeUpstream,
    internal_2: FakeUpstream,
    allowed: list[str],
    where: str,
) -> None:
    # other-port: the index's own host (127.0.0.1) on another port is another origin.
    target = internal if where == "other-port" else internal_2
    upstream.raw_routes[PAGE] = page_linking(target.base_url + FILE)
    with _proxy(tmp_path, upstream.simple_url, allowed_file_hosts=allowed) as proxy:
        _assert_refused(proxy, tmp_path, internal, internal_2)


def test_credentials__never_to_another_origin(
    tmp_path: Path, upstream: FakeUpstream, internal: FakeUpstream
) -> None:
    upstream.auth = ("user", "pa55word")
    index = upstream.simple_url.replace("http://", "http://user:pa55word@")
    upstream.raw_routes[PAGE] = page_linking(upstream.base_url + FILE)
    upstream.raw_routes[FILE] = RawAnswer(302, {"Location": internal.base_url + FILE})
    # Refused outright by default: nothing reaches the other port, credentials least of all.
    with _proxy(tmp_path, index) as proxy:
        _assert_refused(proxy, tmp_path, internal)
        assert upstream.count(FILE) == 1
        assert upstream.requests[-1].headers.get("authorization", "").startswith("Basic ")
    # Allowed by the operator: fetched, but without the index's credentials.
    upstream.reset_log()
    allowed = {
        "allowed_file_hosts": [f"127.0.0.1:{_port(internal)}"],
        "allowed_private_networks": ["127.0.0.0/8"],
        "cache_dir": tmp_path / "cache2",
    }
    with _proxy(tmp_path, index, **allowed) as proxy:
        response = httpx.get(proxy.url + FILE, timeout=20)
        assert response.status_code == 200 and response.content == SECRET
    assert internal.count(FILE) == 1
    assert all("authorization" not in r.headers for r in internal.requests)
