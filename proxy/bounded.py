"""Reading an upstream page into memory with a cap on its wire size and on its inflated size.

The body is read chunk by chunk and inflated here, not by httpx, in steps of at most ``STEP``
bytes: a gzip bomb (a few hundred KB that inflate to gigabytes) is stopped once the cap is
passed, having cost at most the cap plus one step of memory, and nothing of it is kept.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

from proxy.errors import UpstreamBadResponse

STEP = 1024 * 1024
_GZIP = 16 + zlib.MAX_WBITS


class PageTooLarge(UpstreamBadResponse):
    """The upstream sent more than a page may be (on the wire or inflated)."""


class _Inflater:
    """gzip (any number of members) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._decomp = zlib.decompressobj(_GZIP) if self._gzip else None
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._decomp is None:
            # Deflate: a zlib header (RFC 9110), or a bare stream as some servers send.
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._decomp = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        while data:
            try:
                piece = self._decomp.decompress(data, STEP)
            except zlib.error as exc:
                raise UpstreamBadResponse(f"page body does not inflate: {exc}") from None
            if piece:
                yield piece
            if self._decomp.unconsumed_tail:
                data = self._decomp.unconsumed_tail
            elif self._decomp.eof and self._decomp.unused_data and self._gzip:
                data = self._decomp.unused_data  # the next gzip member
                self._decomp = zlib.decompressobj(_GZIP)
            else:
                data = b""

    def check_complete(self) -> None:
        if self._decomp is None or not self._decomp.eof:
            raise UpstreamBadResponse("page body ends in the middle of its compressed stream")


async def read_bounded(
    raw_chunks: AsyncIterator[bytes],
    content_encoding: str,
    *,
    max_wire: int,
    max_inflated: int,
    shown: str,
) -> bytes:
    """The page's inflated body; PageTooLarge as soon as either cap is passed."""
    encoding = content_encoding.strip().lower()
    inflater: _Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding)
    elif encoding not in ("", "identity"):
        raise UpstreamBadResponse(f"{shown} came with Content-Encoding {encoding!r}, not asked for")
    # One growing buffer, not a list of pieces: a large buffer lives in its own mapping, so
    # when a cap trips the memory goes back to the system instead of staying in the heap.
    body = bytearray()
    wire = 0
    try:
        async for chunk in raw_chunks:
            wire += len(chunk)
            if wire > max_wire:
                raise PageTooLarge(f"{shown} is larger than max_page_size ({max_wire} bytes)")
            pieces = inflater.feed(chunk) if inflater is not None else iter((chunk,))
            for piece in pieces:
                if len(body) + len(piece) > max_inflated:
                    raise PageTooLarge(
                        f"{shown} inflates to more than max_page_inflated ({max_inflated} bytes)"
                    )
                body += piece
    except BaseException:
        # The traceback keeps this frame, and so the buffer, alive until the exception is
        # collected: free the buffer now rather than at the next garbage collection.
        del body
        raise
    if inflater is not None:
        inflater.check_complete()
    return bytes(body)
