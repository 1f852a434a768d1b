from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.breaker import Breakers
from proxy.errors import NotFound, UpstreamBadResponse, UpstreamUnavailable
from proxy.origins import AddressGuard, IPAddress, literal_address
from proxy.redact import redact
from proxy.upstream import Upstream
from proxy.upstreamtypes import PAGE_ACCEPT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _public(host: str, port: int) -> list[IPAddress]:
    # No name is looked up for real: every test host is public here.
    address = literal_address("8.8.8.8")
    assert address is not None
    return [address]


def make(
    handler: httpx.MockTransport,
    index: str = "https://u:secret@index.test/simple/",
    **options: Any,
) -> Upstream:
    client = httpx.AsyncClient(transport=handler)
    guard = AddressGuard(index, resolver=_public)
    return Upstream(client, index, retries=2, backoff=0.001, guard=guard, **options)


async def test_get_page__sends_accept_etag_and_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=b"{}",
            headers={
                "content-type": "application/vnd.pypi.simple.v1+json",
                "etag": '"e1"',
                "x-pypi-last-serial": "12",
            },
        )

    upstream = make(httpx.MockTransport(handler))
    fetched = await upstream.get_page("demo/", etag='"e0"')
    assert (
        fetched is not None and fetched.is_json and fetched.serial == 12 and fetched.etag == '"e1"'
    )
    assert "secret" not in fetched.url
    request = seen[0]
    assert request.headers["accept"] == PAGE_ACCEPT
    assert request.headers["if-none-match"] == '"e0"'
    assert request.headers["authorization"].startswith("Basic ")


async def test_get_page__304_is_none() -> None:
    upstream = make(httpx.MockTransport(lambda r: httpx.Response(304)))
    assert await upstream.get_page("demo/", etag='"x"') is None


async def test_get_page__404_is_not_found() -> None:
    upstream = make(httpx.MockTransport(lambda r: httpx.Response(404)))
    with pytest.raises(NotFound):
        await upstream.get_page("demo/")


async def test_get_page__retries_5xx_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503) if len(calls) < 3 else httpx.Response(200, content=b"<html>")

    upstream = make(httpx.MockTransport(handler))
    assert await upstream.get_page("demo/") is not None
    assert len(calls) == 3


async def test_get_page__gives_up_with_redacted_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    upstream = make(httpx.MockTransport(handler))
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.get_page("demo/")
    assert "secret" not in str(info.value)
    assert "***@index.test" in str(info.value)


async def test_get_page__unexpected_status_is_bad_response() -> None:
    upstream = make(httpx.MockTransport(lambda r: httpx.Response(403)))
    with pytest.raises(UpstreamBadResponse):
        await upstream.get_page("demo/")


async def test_stream_file__credentials_only_for_index_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"data")

    upstream = make(httpx.MockTransport(handler))
    async with upstream.stream_file("https://files.test/x.whl") as response:
        assert await response.aread() == b"data"
    async with upstream.stream_file("https://index.test/files/x.whl") as response:
        await response.aread()
    assert "authorization" not in seen[0].headers
    assert "authorization" in seen[1].headers


async def test_pool_timeout__not_an_upstream_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("all connections busy", request=request)

    breakers = Breakers("https://index.test:443", threshold=1)
    upstream = make(httpx.MockTransport(handler), breakers=breakers)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable, match="busy"):
            await upstream.get_page("demo/")
    assert breakers.snapshot()["circuit"] == "closed"
    assert breakers.snapshot()["consecutive_failures"] == 0


async def test_breakers__kept_per_origin() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.test":
            return httpx.Response(503)
        return httpx.Response(200, content=b"{}")

    breakers = Breakers("https://index.test:443", threshold=2)
    upstream = make(httpx.MockTransport(handler), breakers=breakers)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            async with upstream.stream_file("https://files.test/x.whl"):
                pass
    snapshot = breakers.snapshot()
    assert snapshot["circuit"] == "closed"
    assert snapshot["origins"][0]["origin"] == "https://files.test:443"
    assert snapshot["origins"][0]["circuit"] == "open"
    assert await upstream.get_page("demo/") is not None  # the index is still asked


async def test_post__answer_capped_like_a_page() -> None:
    from proxy.upstreamtypes import UpstreamLimits

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<x>" * (int(request.url.params["n"])))

    upstream = make(httpx.MockTransport(handler), limits=UpstreamLimits(max_page_size=100))
    small = await upstream.post("https://index.test/pypi?n=10", b"", {})
    assert small.status_code == 200 and small.content == b"<x>" * 10
    with pytest.raises(UpstreamBadResponse, match="max_page_size"):
        await upstream.post("https://index.test/pypi?n=1000", b"", {})


def test_redact() -> None:
    assert redact("https://u:p@h.test:8443/simple/") == "https://***@h.test:8443/simple/"
    assert redact("https://h.test/simple/") == "https://h.test/simple/"


async def test_credentials__percent_encoded_userinfo_decoded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"{}", headers={"content-type": "text/html"})

    upstream = make(
        httpx.MockTransport(handler), index="https://me%40corp:p%40ss%3Aw%2Frd@index.test/simple/"
    )
    await upstream.get_page("demo/")
    expected = httpx.BasicAuth("me@corp", "p@ss:w/rd")
    probe = next(expected.auth_flow(httpx.Request("GET", "https://index.test/")))
    assert seen[0].headers["authorization"] == probe.headers["authorization"]
