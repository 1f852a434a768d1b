"""Responses the proxy sends: stored page bytes, files from disk (with Range), growing downloads."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from proxy.models import TEXT_HTML, Body
from proxy.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range

FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# The server waits for a client's socket to drain before each body chunk, so a slow (or
# never-reading) client holds about two chunks of memory: keep them small. A stored file's
# reads are small enough to make inline, and the kernel is asked to read ahead so that they
# come from the page cache rather than block on the disk.
CHUNK = 64 * 1024
MEMORY_PIECE = 1024 * 1024  # a hot file held in memory is sent in views of this size


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def wants_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"').removesuffix("-gz")
        if tag == etag:
            return True
    return False


def page_parts(
    body: Body,
    media_type: str,
    max_age: int,
    serial: int | None,
    *,
    accept_encoding: str | None,
    if_none_match: str | None,
    head: bool,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and content of a simple-API page from stored bytes: gzip when
    accepted, 304 on a matching ETag. Pure, so the fast path and the router share it."""
    gz = wants_gzip(accept_encoding)
    headers = [
        (b"etag", f'"{body.etag}-gz"'.encode() if gz else f'"{body.etag}"'.encode()),
        (b"vary", b"Accept, Accept-Encoding"),
        (b"cache-control", f"max-age={max_age}, public".encode()),
    ]
    if serial is not None:
        headers.append((b"x-pypi-last-serial", str(serial).encode()))
    if _etag_matches(if_none_match, body.etag):
        return 304, headers, b""
    content = body.gz if gz else body.raw
    if gz:
        headers.append((b"content-encoding", b"gzip"))
    content_type = f"{media_type}; charset=utf-8" if media_type == TEXT_HTML else media_type
    headers.append((b"content-type", content_type.encode()))
    headers.append((b"content-length", str(len(content)).encode()))
    return 200, headers, b"" if head else content


class RawResponse:
    """Send prepared status, headers and bytes, nothing more."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.content})


def page_response(
    request: Request, body: Body, media_type: str, max_age: int, serial: int | None
) -> RawResponse:
    status, headers, content = page_parts(
        body,
        media_type,
        max_age,
        serial,
        accept_encoding=request.headers.get("accept-encoding"),
        if_none_match=request.headers.get("if-none-match"),
        head=request.method == "HEAD",
    )
    return RawResponse(status, headers, content)


class _StoredAnswer:
    """A stored file's answer: HEAD, Range (one range), If-Range; the body is a subclass's."""

    def __init__(
        self,
        size: int,
        mtime: float,
        *,
        etag: str,
        method: str,
        range_header: str | None,
        if_range: str | None,
        on_sent: Callable[[int], None],
    ) -> None:
        self.size = size
        self.etag = f'"{etag}"'
        self.last_modified = formatdate(mtime, usegmt=True)
        self.head = method == "HEAD"
        self.on_sent = on_sent
        self.status = 200
        self.range: ByteRange | None = None
        if range_header is not None and if_range_allows(if_range, self.etag, self.last_modified):
            try:
                self.range = parse_range(range_header, self.size)
            except Unsatisfiable:
                self.status = 416
        if self.range is not None:
            self.status = 206

    def _headers(self, length: int) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(length).encode()),
            (b"accept-ranges", b"bytes"),
            (b"etag", self.etag.encode()),
            (b"last-modified", self.last_modified.encode()),
            (b"cache-control", FILE_CACHE_CONTROL.encode()),
        ]
        if self.range is not None:
            r = self.range
            headers.append((b"content-range", f"bytes {r.start}-{r.end}/{self.size}".encode()))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._send(send)

    async def _send(self, send: Send) -> None:
        if self.status == 416:
            await send(
                {
                    "type": "http.response.start",
                    "status": 416,
                    "headers": [
                        (b"content-range", f"bytes */{self.size}".encode()),
                        (b"content-length", b"0"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        start, length = (self.range.start, self.range.length) if self.range else (0, self.size)
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self._headers(length)}
        )
        if self.head or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        await self._body(send, start, length)

    async def _body(self, send: Send, start: int, length: int) -> None:
        raise NotImplementedError


class FileResponse(_StoredAnswer):
    """A stored file on a descriptor, read in chunks as the client takes them."""

    def __init__(
        self,
        fd: int,
        stat: os.stat_result,
        *,
        etag: str,
        method: str,
        range_header: str | None,
        if_range: str | None,
        on_sent: Callable[[int], None],
    ) -> None:
        # Opened by the caller before anything is sent: a file evicted meanwhile is then a
        # miss, not a 200 whose body never comes. The response owns and closes it.
        self.fd = fd
        super().__init__(
            stat.st_size,
            stat.st_mtime,
            etag=etag,
            method=method,
            range_header=range_header,
            if_range=if_range,
            on_sent=on_sent,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send(send)
        finally:
            os.close(self.fd)

    async def _body(self, send: Send, start: int, length: int) -> None:
        fd = self.fd
        sent = 0
        try:
            if length > CHUNK and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
            while sent < length:
                chunk = os.pread(fd, min(CHUNK, length - sent), start + sent)
                if not chunk:
                    raise OSError("file shrank while being sent")
                sent += len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": sent < length}
                )
        finally:
            self.on_sent(sent)


class MemoryResponse(_StoredAnswer):
    """A hot file's verified bytes held in memory (``proxy.memfiles``): no disk read, and no
    copy in this process. Sent as views of the one shared buffer, in pieces of
    ``MEMORY_PIECE``: uvloop's transport keeps the view, not a copy, while a slow client
    drains it, and asyncio's own (which copies what the socket did not take) holds at most
    one piece per client, since the server waits for the socket to drain between pieces."""

    def __init__(
        self,
        data: bytes,
        mtime: float,
        *,
        etag: str,
        method: str,
        range_header: str | None,
        if_range: str | None,
        on_sent: Callable[[int], None],
    ) -> None:
        self.data = data
        super().__init__(
            len(data),
            mtime,
            etag=etag,
            method=method,
            range_header=range_header,
            if_range=if_range,
            on_sent=on_sent,
        )

    async def _body(self, send: Send, start: int, length: int) -> None:
        view = memoryview(self.data)
        end = start + length
        at = start
        try:
            while at < end:
                upto = min(at + MEMORY_PIECE, end)
                await send(
                    {"type": "http.response.body", "body": view[at:upto], "more_body": upto < end}
                )
                at = upto
        finally:
            self.on_sent(at - start)


class StreamResponse:
    """A download in progress. Raising mid-body makes the server cut the connection, so a
    client can tell a failed transfer from a complete one."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        total: int | None,
        etag: str | None,
        on_sent: Callable[[int], None],
    ) -> None:
        self.chunks = chunks
        self.total = total
        self.etag = etag
        self.on_sent = on_sent

    @staticmethod
    async def _pieces(send: Send, chunk: bytes) -> int:
        """Send in small pieces: each waits for the client to take the one before, so a slow
        reader holds little memory."""
        for at in range(0, len(chunk), CHUNK):
            piece = chunk[at : at + CHUNK]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        return len(chunk)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"cache-control", FILE_CACHE_CONTROL.encode()),
        ]
        if self.total is not None:
            headers.append((b"content-length", str(self.total).encode()))
        if self.etag is not None:
            headers.append((b"etag", f'"{self.etag}"'.encode()))
        sent = 0
        try:
            # The status goes out with the first verified-safe chunk, not before: a download
            # that fails first is a clean 502, and an empty file is answered only once checked.
            try:
                first: bytes | None = await self.chunks.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                failed = error(502, f"could not fetch the file from the upstream: {exc}")
                await failed(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if first is not None:
                sent += await self._pieces(send, first)
                async for chunk in self.chunks:
                    sent += await self._pieces(send, chunk)
            await send({"type": "http.response.body", "body": b""})
        finally:
            closing = getattr(self.chunks, "aclose", None)
            if closing is not None:
                await closing()  # the reader's descriptors now, not when collected
            self.on_sent(sent)
