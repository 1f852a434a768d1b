"""Origins and addresses, without a server: addresses that must never see a packet, credentials
that stay with the index's own origin, bounded redirects (issue 8, item 1)."""

from __future__ import annotations

import httpx
import pytest

from proxy.errors import UpstreamError
from proxy.origins import AddressGuard, IPAddress, Refused, host_allowed, literal_address
from proxy.upstream import Upstream


async def _public(host: str, port: int) -> list[IPAddress]:
    address = literal_address("8.8.8.8")
    assert address is not None
    return [address]


async def _resolve_internal(host: str, port: int) -> list[IPAddress]:
    names = {"index.test": "8.8.8.8", "metadata.test": "169.254.169.254", "mixed.test": "10.1.1.1"}
    address = literal_address(names.get(host, "8.8.8.8"))
    extra = literal_address("8.8.4.4")
    assert address is not None and extra is not None
    return [extra, address]


def _recording(seen: list[httpx.Request], redirect_to: str | None = None) -> Upstream:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if redirect_to is not None and request.url.path.endswith("/hop"):
            return httpx.Response(302, headers={"Location": redirect_to})
        return httpx.Response(200, content=b"bytes")

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    index = "https://u:secret@index.test/simple/"
    guard = AddressGuard(index, resolver=_resolve_internal)
    return Upstream(client, index, retries=0, backoff=0, guard=guard)


INTERNAL_URLS = [
    "http://10.0.0.1/x.whl",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.2/x.whl",
    "http://0.0.0.0:8080/x.whl",
    "http://[::1]/x.whl",
    "http://[::ffff:127.0.0.1]/x.whl",
    "http://[fe80::1]/x.whl",
    "http://100.64.0.1/x.whl",
    "http://192.168.1.1/x.whl",
    "http://172.16.0.1/x.whl",
    "http://metadata.test/computeMetadata/v1/",  # a name that resolves to link-local
    "http://mixed.test/x.whl",  # one public address and one private: refused
]


@pytest.mark.anyio
@pytest.mark.parametrize("url", INTERNAL_URLS)
@pytest.mark.parametrize("via", ["link", "redirect"])
async def test_internal_addresses__refused_before_connecting(url: str, via: str) -> None:
    seen: list[httpx.Request] = []
    upstream = _recording(seen, redirect_to=url)
    first = "https://cdn.test/hop" if via == "redirect" else url
    with pytest.raises(Refused):
        async with upstream.stream_file(first):
            pass
    assert [str(r.url) for r in seen] == (["https://cdn.test/hop"] if via == "redirect" else [])


@pytest.mark.anyio
async def test_credentials__not_downgraded_nor_sent_after_redirect() -> None:
    seen: list[httpx.Request] = []
    upstream = _recording(seen, redirect_to="http://index.test/files/x.whl")
    async with upstream.stream_file("https://index.test/files/hop") as response:
        await response.aread()
    assert [str(r.url) for r in seen] == [
        "https://index.test/files/hop",
        "http://index.test/files/x.whl",
    ]
    assert "authorization" in seen[0].headers  # the index's own origin
    assert "authorization" not in seen[1].headers  # plain http: another origin
    seen.clear()
    async with upstream.stream_file("https://index.test:8443/files/x.whl") as response:
        await response.aread()
    assert "authorization" not in seen[0].headers  # another port: another origin


@pytest.mark.anyio
async def test_redirects__bounded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": f"/loop/{len(seen)}"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    index = "https://index.test/simple/"
    upstream = Upstream(client, index, retries=0, guard=AddressGuard(index, resolver=_public))
    with pytest.raises(UpstreamError, match="redirects"):
        await upstream.get_page("demo/")
    assert len(seen) == 6  # the first request and five redirects


def test_host_allowed__origin_not_host() -> None:
    index = "https://index.test/simple/"
    assert host_allowed("https://index.test/files/x.whl", index, ["files.test"])
    assert not host_allowed("https://index.test:8443/x.whl", index, ["files.test"])
    assert not host_allowed("http://index.test/x.whl", index, ["files.test"])
    assert host_allowed("https://files.test/x.whl", index, ["files.test"])
    assert host_allowed("http://files.test/x.whl", index, ["files.test"])
    assert not host_allowed("https://files.test:444/x.whl", index, ["files.test"])
    assert host_allowed("https://files.test:444/x.whl", index, ["files.test:444"])
    assert host_allowed("https://files.test:9/x.whl", index, ["files.test:*"])
    assert not host_allowed("http://files.test/x.whl", index, ["https://files.test"])
    assert host_allowed("https://a.cdn.test/x.whl", index, ["*.cdn.test"])
    assert not host_allowed("ftp://files.test/x.whl", index, ["files.test"])


# -- at connect time: the address connected to is the one checked ----------------------------


def _client_resolving(name_to: str, networks: tuple[str, ...] = ()) -> httpx.AsyncClient:
    from proxy.httpclient import make_http_client
    from proxy.settings import load_settings

    async def resolver(host: str, port: int) -> list[IPAddress]:
        address = literal_address(name_to if host == "rebind.test" else "8.8.8.8")
        assert address is not None
        return [address]

    settings = load_settings(None, {}, {"connect_timeout": 2, "read_timeout": 2})
    guard = AddressGuard("https://index.test/simple/", networks, resolver=resolver)
    return make_http_client(settings, 4, guard)


@pytest.mark.anyio
async def test_connections__only_to_checked_addresses() -> None:
    from tests.support.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        port = fake.base_url.rsplit(":", 1)[1]
        # The name resolves (for the guard) to loopback: no connection is made at all, even
        # for a request that never went through Upstream's URL checks.
        async with _client_resolving("127.0.0.1") as client:
            with pytest.raises(Refused):
                await client.get(f"http://rebind.test:{port}/simple/")
        assert fake.requests == []
        # Allowed by the operator: the connection goes to the very address the guard checked
        # (rebind.test resolves nowhere else, so reaching the fake proves it).
        async with _client_resolving("127.0.0.1", ("127.0.0.0/8",)) as client:
            response = await client.get(f"http://rebind.test:{port}/simple/")
        assert response.status_code == 200
        assert fake.requests[0].headers["host"] == f"rebind.test:{port}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowed_file_hosts", "ftp://files.test"),
        ("allowed_file_hosts", "files.test/path"),
        ("allowed_file_hosts", "files.test:port"),
        ("allowed_private_networks", "10.0.0.0/33"),
        ("allowed_private_networks", "not-a-network"),
        ("max_page_size", "0"),
        ("upstream_deadline", "0"),
        ("max_redirects", "50"),
    ],
)
def test_settings__bad_values_named(key: str, value: str) -> None:
    from proxy.errors import SettingsError
    from proxy.settings import load_settings

    with pytest.raises(SettingsError, match=key):
        load_settings(None, {f"PYPI_PROXY_{key.upper()}": value})


def test_settings__defaults() -> None:
    from proxy.settings import load_settings

    settings = load_settings(None, {})
    assert settings.max_page_size == 64 * 1024**2
    assert settings.max_page_inflated == 128 * 1024**2
    assert settings.upstream_deadline == 30
    assert settings.max_redirects == 5
    assert settings.allowed_private_networks == ()
    assert (settings.page_connections, settings.file_connections) == (20, 100)
