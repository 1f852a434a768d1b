"""Core metadata (PEP 658) for a wheel whose index gives none: read out of the wheel itself,
from the upstream with a few ranged reads or from the stored, verified copy (issue 10).

Nothing here is trusted more than the upstream's own ``.metadata`` would be: every range is
checked against the size the page gives and the total the server states, the member's CRC is
checked (proxy.wheelmeta), and a server that ignores ranges makes the caller fall back to the
whole file. What a ranged read returns is what the wheel at that URL holds; once the whole wheel
is stored (its sha256 verified), the copy extracted from it is the one to keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from proxy.upstream import PartialRead, Upstream
from proxy.wheelmeta import TAIL, NoMetadata, read_metadata


async def remote_metadata(upstream: Upstream, url: str, size: int | None) -> bytes:
    """METADATA of the wheel at ``url`` (``size`` from the page, if it gives one) in two to
    four ranged GETs. Raises NoMetadata (not a readable wheel), RangesIgnored (fall back to
    the whole file) or the upstream's errors."""
    tail = await upstream.read_range(url, f"-{TAIL}", TAIL)
    total = tail.total
    if size is not None and size != total:
        raise NoMetadata(f"the page says {size} bytes, the server {total}")
    if tail.start + len(tail.data) != total:
        raise NoMetadata("the tail read does not end at the end of the file")

    async def read(start: int, end: int) -> bytes:
        if end <= start:
            return b""
        held = tail.start + len(tail.data)
        if tail.start <= start and end <= held:
            return tail.data[start - tail.start : end - tail.start]
        part: PartialRead = await upstream.read_range(url, f"{start}-{end - 1}", end - start)
        if part.start != start or len(part.data) != end - start or part.total != total:
            raise NoMetadata("a range answered with other bytes than asked for")
        return part.data

    return await read_metadata(read, total)


async def stored_metadata(path: Path) -> bytes:
    """METADATA of a stored wheel: a few small reads of the file (in a worker thread)."""
    fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    try:
        total = os.fstat(fd).st_size

        async def read(start: int, end: int) -> bytes:
            data = await anyio.to_thread.run_sync(os.pread, fd, end - start, start)
            if len(data) != end - start:
                raise NoMetadata("the stored file is shorter than its directory says")
            return data

        return await read_metadata(read, total)
    finally:
        os.close(fd)
