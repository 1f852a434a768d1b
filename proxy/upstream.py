"""The upstream index behind one small interface: pages with revalidation, and file streams.

Every httpx error becomes one of the project's own errors here, and no URL leaves this module
(in a message or a log line) without its credentials redacted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import unquote, urljoin, urlsplit

import anyio
import httpx

from proxy.bounded import PageTooLarge, read_bounded
from proxy.breaker import Breakers, CircuitBreaker
from proxy.errors import NotFound, UpstreamBadResponse, UpstreamUnavailable
from proxy.origins import AddressGuard, Origin, OriginPolicy, Refused, origin_of
from proxy.redact import redact, strip_credentials

# Its data and errors live in proxy.upstreamtypes; named here too, as callers knew them.
from proxy.upstreamtypes import PAGE_ACCEPT as PAGE_ACCEPT
from proxy.upstreamtypes import CircuitOpen as CircuitOpen
from proxy.upstreamtypes import Fetched as Fetched
from proxy.upstreamtypes import PartialRead as PartialRead
from proxy.upstreamtypes import RangesIgnored as RangesIgnored
from proxy.upstreamtypes import UpstreamLimits as UpstreamLimits

log = logging.getLogger(__name__)

_RETRY_STATUS = {500, 502, 503, 504, 429}
_REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_RETRY_AFTER = 10.0


def _fetched(method: str, shown: str, status: int, size: int, clock: float) -> None:
    """One line per upstream exchange: ``shown`` is redacted; size is the bytes on the wire."""
    ms = round((time.monotonic() - clock) * 1000, 1)
    log.info(
        "upstream %s %s: %d, %d bytes in %g ms",
        method,
        shown,
        status,
        size,
        ms,
        extra={"url": shown, "method": method, "status": status, "bytes": size, "ms": ms},
    )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def parse_content_range(headers: httpx.Headers, shown: str) -> tuple[int, int, int]:
    """(first, last, total) of a 206's ``Content-Range: bytes first-last/total``."""
    value = headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    if unit != "bytes" or not (first.isdigit() and last.isdigit() and total.isdigit()):
        raise UpstreamBadResponse(f"{shown}: a 206 without a usable Content-Range ({value!r})")
    a, b, n = int(first), int(last), int(total)
    if not a <= b < n:
        raise UpstreamBadResponse(f"{shown}: an impossible Content-Range ({value!r})")
    return a, b, n


def _serial_header(response: httpx.Response) -> int | None:
    value = response.headers.get("x-pypi-last-serial", "")
    return int(value) if value.strip().isdigit() else None


class Upstream:
    """Talks to one upstream simple index. Owns no client: they are made per process and passed
    in (one for pages, optionally another for files)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        index_url: str,
        *,
        files_client: httpx.AsyncClient | None = None,
        retries: int = 2,
        backoff: float = 0.25,
        breakers: Breakers | None = None,
        limits: UpstreamLimits | None = None,
        allowed_file_hosts: Sequence[str] = (),
        guard: AddressGuard | None = None,
    ) -> None:
        self._pages = client
        self._files = files_client or client
        # Credentials travel only as an Authorization header, never inside a URL that httpx
        # could log or put in an exception.
        self._index_url = strip_credentials(index_url)
        self._public_index = redact(index_url)
        self._policy = OriginPolicy(index_url, allowed_file_hosts)
        self._guard = guard or AddressGuard(index_url)
        self._origin = self._policy.index
        primary = str(self._origin) if self._origin is not None else self._index_url
        # Per-origin circuit breakers; /stats reads them as ``upstream.breaker``.
        self.breaker = breakers or Breakers(primary, threshold=0)
        parts = urlsplit(index_url)
        # Userinfo in a URL is percent-encoded (a password may hold "@", ":" or "/"): decode it,
        # as pip does, before it becomes a Basic header.
        self._auth = (
            httpx.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
            if parts.username is not None or parts.password is not None
            else None
        )
        self._retries = retries
        self._backoff = backoff
        self._limits = limits or UpstreamLimits()

    def _auth_for(self, origin: Origin) -> httpx.BasicAuth | None:
        # Credentials go to the index's own origin only (scheme, host and port): never to
        # another port, never over http when the index is https, never after a redirect away.
        return self._auth if origin == self._origin else None

    def _breaker(self, origin: Origin | None) -> CircuitBreaker:
        return self.breaker.for_origin(str(origin) if origin is not None else self.breaker.primary)

    async def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self._backoff * (2**attempt)
        if response is not None and response.status_code == 429:
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
        await asyncio.sleep(delay)

    async def get_page(self, path: str, etag: str | None = None) -> Fetched | None:
        """GET ``<index>/<path>``; None when the upstream says our copy (``etag``) is current.

        The whole exchange (retries, redirects and body) has one deadline, and the body is
        capped on the wire and inflated (PageTooLarge).
        """
        return await self._get_bounded(
            self._index_url + path, self._public_index + path, PAGE_ACCEPT, etag
        )

    async def get_document(
        self, url: str, etag: str | None = None, accept: str = "application/json"
    ) -> Fetched | None:
        """``get_page`` for another URL of the upstream (the JSON API): the same caps, deadline,
        retries, breaker and credentials (for the index's own origin only)."""
        return await self._get_bounded(strip_credentials(url), redact(url), accept, etag)

    async def _get_bounded(
        self, url: str, shown: str, accept: str, etag: str | None
    ) -> Fetched | None:
        # Inflated here (bounded), not by httpx: ask only for what bounded.py can inflate.
        headers = {"Accept": accept, "Accept-Encoding": "gzip, deflate"}
        if etag:
            headers["If-None-Match"] = etag
        limits = self._limits
        clock = time.monotonic()
        try:
            with anyio.fail_after(limits.deadline):
                response, body = await self._send(url, headers, shown, self._pages, read=True)
            _fetched("GET", shown, response.status_code, response.num_bytes_downloaded, clock)
        except NotFound:
            _fetched("GET", shown, 404, 0, clock)  # (or 410) an answer too, worth its line
            raise
        except TimeoutError:
            self._breaker(self._origin).failure()
            raise UpstreamUnavailable(
                f"no whole answer for {shown} within {limits.deadline:g}s (upstream_deadline)"
            ) from None
        if response.status_code == 304:
            return None
        return Fetched(
            body=body or b"",
            content_type=response.headers.get("content-type", "").lower(),
            etag=response.headers.get("etag"),
            serial=_serial_header(response),
            url=strip_credentials(str(response.url)),
        )

    async def _follow(
        self,
        url: str,
        headers: dict[str, str],
        shown: str,
        client: httpx.AsyncClient,
        hops: list[Origin],
    ) -> httpx.Response:
        """One GET, following redirects ourselves: each hop's origin and addresses are checked
        before it is asked, and its credentials decided for it alone."""
        for _ in range(self._limits.max_redirects + 1):
            origin = origin_of(url)
            if origin is None:
                raise Refused(f"refused {redact(url)}: not an http(s) URL (from {shown})")
            if not self._policy.allows(origin):
                raise Refused(f"refused {redact(url)}: {origin} is not an allowed origin")
            await self._guard.check(origin, redact(url))
            if not self._breaker(origin).allow():
                raise CircuitOpen(
                    f"upstream circuit for {origin} is open (recent failures); "
                    f"not asking for {shown}"
                )
            hops.append(origin)
            request = client.build_request("GET", url, headers=headers)
            response = await client.send(request, stream=True, auth=self._auth_for(origin))
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUS or not location:
                return response
            await response.aclose()
            self._breaker(origin).success()  # it answered
            url = strip_credentials(urljoin(url, location))
        raise UpstreamBadResponse(
            f"more than {self._limits.max_redirects} redirects for {shown} (max_redirects)"
        )

    async def _read_page(self, response: httpx.Response, shown: str) -> bytes:
        limits = self._limits
        header = response.headers.get("content-length", "")
        if header.isdigit() and int(header) > limits.max_page_size:
            raise PageTooLarge(
                f"{shown} is {header} bytes, over max_page_size ({limits.max_page_size} bytes)"
            )
        if response.is_stream_consumed:
            # Already read and decoded (an in-memory transport, in tests): cap what it holds.
            return await read_bounded(
                _once(response.content),
                "",
                max_wire=limits.max_page_size,
                max_inflated=limits.max_page_inflated,
                shown=shown,
            )
        return await read_bounded(
            response.aiter_raw(),
            response.headers.get("content-encoding", ""),
            max_wire=limits.max_page_size,
            max_inflated=limits.max_page_inflated,
            shown=shown,
        )

    async def _send(
        self,
        url: str,
        headers: dict[str, str],
        shown: str,
        client: httpx.AsyncClient,
        *,
        read: bool = False,
        partial: bool = False,
    ) -> tuple[httpx.Response, bytes | None]:
        """A GET answered 200 or 304, retried with backoff on connection errors, 5xx and 429.

        With ``read``, a 200's body is read here (capped, and retried like the rest) and the
        response is closed; without, the response is returned open for streaming.
        """
        last_error = "no attempt made"
        failing: Origin | None = origin_of(url)
        for attempt in range(self._retries + 1):
            response: httpx.Response | None = None
            hops: list[Origin] = []
            try:
                response = await self._follow(url, headers, shown, client, hops)
                failing = hops[-1]
                status = response.status_code
                if status in (200, 304) or (partial and status == 206):
                    body = None
                    if read:
                        try:
                            body = await self._read_page(response, shown) if status == 200 else b""
                        finally:
                            await response.aclose()
                    self._breaker(failing).success()
                    return response, body
            except httpx.PoolTimeout:
                # Every connection of ours is busy: local congestion, not an upstream failure.
                raise UpstreamUnavailable(
                    f"no free upstream connection here in time for {shown} (the proxy is busy)"
                ) from None
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__} fetching {shown}"
                failing = hops[-1] if hops else failing
            else:
                await response.aclose()
                if status not in _RETRY_STATUS:
                    self._breaker(failing).success()
                if status in (404, 410):
                    raise NotFound(f"upstream has no {shown}")
                if status not in _RETRY_STATUS:
                    raise UpstreamBadResponse(f"upstream answered {status} for {shown}")
                last_error = f"upstream answered {status} for {shown}"
            log.info("upstream GET %s failed (try %d): %s", shown, attempt + 1, last_error)
            if attempt < self._retries:
                await self._sleep_before_retry(attempt, response)
        self._breaker(failing).failure()
        raise UpstreamUnavailable(last_error)

    def stream_file(self, url: str) -> AbstractAsyncContextManager[httpx.Response]:
        """An open 200 response for a file; retried until its body starts, never after."""
        return self.stream(url, {"Accept-Encoding": "identity"}, self._files)

    async def read_range(self, url: str, spec: str, limit: int) -> PartialRead:
        """A ranged GET of a file (``spec`` is ``first-last`` or ``-suffix``), read whole (at
        most ``limit`` bytes): the bytes, where they start and the file's total size, all as
        the answer's Content-Range says and checked against each other. RangesIgnored when
        the server sends the whole file instead (200), without reading it."""
        shown = redact(url)
        url = strip_credentials(url)
        headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
        clock = time.monotonic()
        try:
            with anyio.fail_after(self._limits.deadline):
                response, _ = await self._send(url, headers, shown, self._files, partial=True)
                try:
                    if response.status_code != 206:
                        raise RangesIgnored(f"{shown} answered {response.status_code} to a Range")
                    start, last, total = parse_content_range(response.headers, shown)
                    if last - start + 1 > limit:
                        raise UpstreamBadResponse(f"{shown}: a range larger than asked for")
                    data = bytearray()
                    async for chunk in response.aiter_raw():
                        data += chunk
                        if len(data) > last - start + 1:
                            raise UpstreamBadResponse(f"{shown}: more bytes than its range")
                    if len(data) != last - start + 1:
                        raise UpstreamBadResponse(f"{shown}: fewer bytes than its range")
                finally:
                    await response.aclose()
            _fetched("GET", shown, 206, response.num_bytes_downloaded, clock)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"no answer for {shown} within {self._limits.deadline:g}s (upstream_deadline)"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__} fetching {shown}") from None
        return PartialRead(start, bytes(data), total)

    def stream_page(
        self, path: str, accept: str = PAGE_ACCEPT
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """An open 200 response for ``<index>/<path>``, for pages too large to hold at once
        (the caller reads it as a stream, so no size cap applies)."""
        return self.stream(self._index_url + path, {"Accept": accept}, self._pages)

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """One POST (XML-RPC), not retried nor redirected: the caller decides what a failure
        means. Its answer is capped and deadlined as a page is."""
        shown = redact(url)
        url = strip_credentials(url)
        origin = origin_of(url)
        if origin is None:
            raise Refused(f"refused {shown}: not an http(s) URL")
        # The answer is read like a page (capped, inflated here), so ask for what we inflate.
        headers = {**headers, "Accept-Encoding": "gzip, deflate"}
        clock = time.monotonic()
        try:
            with anyio.fail_after(self._limits.deadline):
                request = self._pages.build_request("POST", url, content=content, headers=headers)
                response = await self._pages.send(request, auth=self._auth_for(origin), stream=True)
                try:
                    body = await self._read_page(response, shown)
                finally:
                    await response.aclose()
            _fetched("POST", shown, response.status_code, response.num_bytes_downloaded, clock)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"no answer from {shown} within {self._limits.deadline:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__} posting to {shown}") from None
        # The body as read, without the headers that described its encoding on the wire.
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=kept, content=body, request=request)

    @asynccontextmanager
    async def stream(
        self, url: str, headers: dict[str, str], client: httpx.AsyncClient | None = None
    ) -> AsyncIterator[httpx.Response]:
        """An open 200 response; retried until its body starts, never after. The deadline
        covers getting the response's head (a body may take as long as it takes to arrive)."""
        shown = redact(url)
        url = strip_credentials(url)
        clock = time.monotonic()
        try:
            with anyio.fail_after(self._limits.deadline):
                response, _ = await self._send(url, headers, shown, client or self._files)
        except TimeoutError:
            self._breaker(origin_of(url)).failure()
            raise UpstreamUnavailable(
                f"no answer for {shown} within {self._limits.deadline:g}s (upstream_deadline)"
            ) from None
        try:
            yield response
        finally:
            await response.aclose()
            _fetched("GET", shown, response.status_code, response.num_bytes_downloaded, clock)
