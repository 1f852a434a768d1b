"""The upstream index behind one small interface: pages with revalidation, and file streams.

Every httpx error becomes one of the project's own errors here, and no URL leaves this module
(in a message or a log line) without its credentials redacted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from proxy import __version__
from proxy.breaker import CircuitBreaker
from proxy.errors import NotFound, UpstreamBadResponse, UpstreamUnavailable
from proxy.settings import Settings

log = logging.getLogger(__name__)

PAGE_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
_RETRY_STATUS = {500, 502, 503, 504, 429}
MAX_RETRY_AFTER = 10.0


def redact(url: str) -> str:
    """The URL with any user name and password replaced, safe for logs, pages and stats."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return redact(url).replace("***@", "", 1)


def user_agent(settings: Settings) -> str:
    return (
        settings.user_agent
        or f"pypi-proxy/{__version__} (caching mirror; httpx/{httpx.__version__})"
    )


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    verify: str | bool = settings.ca_bundle if settings.ca_bundle else True
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": user_agent(settings)},
        follow_redirects=True,
        verify=verify,
        trust_env=True,  # HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE, as operators expect
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str
    etag: str | None
    serial: int | None
    url: str  # final URL after redirects, credentials stripped, for resolving relative links

    @property
    def is_json(self) -> bool:
        return "json" in self.content_type


def _serial_header(response: httpx.Response) -> int | None:
    value = response.headers.get("x-pypi-last-serial", "")
    return int(value) if value.strip().isdigit() else None


class Upstream:
    """Talks to one upstream simple index. Owns no client: one is made per process and passed in."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        index_url: str,
        *,
        retries: int = 2,
        backoff: float = 0.25,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self.breaker = breaker or CircuitBreaker(threshold=0)
        # Credentials travel only as an Authorization header, never inside a URL that httpx
        # could log or put in an exception.
        self._index_url = strip_credentials(index_url)
        self._public_index = redact(index_url)
        parts = urlsplit(index_url)
        self._host = parts.hostname
        self._auth = (
            httpx.BasicAuth(parts.username or "", parts.password or "")
            if parts.username is not None or parts.password is not None
            else None
        )
        self._retries = retries
        self._backoff = backoff

    def _auth_for(self, url: str) -> httpx.BasicAuth | None:
        # Credentials go to the index's own host only, as pip does.
        return self._auth if urlsplit(url).hostname == self._host else None

    async def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self._backoff * (2**attempt)
        if response is not None and response.status_code == 429:
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
        await asyncio.sleep(delay)

    async def get_page(self, path: str, etag: str | None = None) -> Fetched | None:
        """GET ``<index>/<path>``; None when the upstream says our copy (``etag``) is current."""
        url = self._index_url + path
        headers = {"Accept": PAGE_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        response = await self._send(url, headers, self._public_index + path, stream=False)
        if response.status_code == 304:
            return None
        return Fetched(
            body=response.content,
            content_type=response.headers.get("content-type", "").lower(),
            etag=response.headers.get("etag"),
            serial=_serial_header(response),
            url=strip_credentials(str(response.url)),
        )

    async def _send(
        self, url: str, headers: dict[str, str], shown: str, *, stream: bool
    ) -> httpx.Response:
        """A GET answered 200 or 304, retried with backoff on connection errors, 5xx and 429."""
        self._check_circuit(shown)
        last_error = "no attempt made"
        for attempt in range(self._retries + 1):
            response: httpx.Response | None = None
            try:
                request = self._client.build_request("GET", url, headers=headers)
                response = await self._client.send(request, stream=stream, auth=self._auth_for(url))
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__} fetching {shown}"
            else:
                status = response.status_code
                if status not in _RETRY_STATUS:
                    self.breaker.success()
                if status in (200, 304):
                    return response
                await response.aclose()
                if status in (404, 410):
                    raise NotFound(f"upstream has no {shown}")
                if status not in _RETRY_STATUS:
                    raise UpstreamBadResponse(f"upstream answered {status} for {shown}")
                last_error = f"upstream answered {status} for {shown}"
            if attempt < self._retries:
                await self._sleep_before_retry(attempt, response)
        self.breaker.failure()
        raise UpstreamUnavailable(last_error)

    def _check_circuit(self, shown: str) -> None:
        if not self.breaker.allow():
            raise UpstreamUnavailable(
                f"upstream circuit is open (recent failures); not asking for {shown}"
            )

    def stream_file(self, url: str) -> AbstractAsyncContextManager[httpx.Response]:
        """An open 200 response for a file; retried until its body starts, never after."""
        return self.stream(url, {"Accept-Encoding": "identity"})

    def stream_page(
        self, path: str, accept: str = PAGE_ACCEPT
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """An open 200 response for ``<index>/<path>``, for pages too large to hold at once."""
        return self.stream(self._index_url + path, {"Accept": accept})

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """One POST (XML-RPC), not retried: the caller decides what a failure means."""
        shown = redact(url)
        url = strip_credentials(url)
        try:
            request = self._client.build_request("POST", url, content=content, headers=headers)
            return await self._client.send(request, auth=self._auth_for(url))
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__} posting to {shown}") from None

    @asynccontextmanager
    async def stream(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """An open 200 response; retried until its body starts, never after."""
        response = await self._send(strip_credentials(url), headers, redact(url), stream=True)
        try:
            yield response
        finally:
            await response.aclose()
