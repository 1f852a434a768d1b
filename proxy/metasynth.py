"""Core metadata (PEP 658) for a wheel whose index gives none: read out of the wheel itself,
from the upstream with a few ranged reads or from the stored, verified copy (issue 10).

Nothing here is trusted more than the upstream's own ``.metadata`` would be: every range is
checked against the size the page gives and the total the server states, the member's CRC is
checked (proxy.wheelmeta), and a server that ignores ranges makes the caller fall back to the
whole file. What a ranged read returns is what the wheel at that URL holds; once the whole wheel
is stored (its sha256 verified), the copy extracted from it is the one to keep.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from proxy.errors import UpstreamUnavailable
from proxy.filestore import StoredFile
from proxy.fill import Target
from proxy.locate import METADATA_SUFFIX
from proxy.metafailures import Failure, MetadataFailures
from proxy.models import DistFile
from proxy.names import is_sha256
from proxy.storage import Storage
from proxy.upstream import Upstream
from proxy.upstreamtypes import PartialRead, RangesIgnored
from proxy.wheelmeta import TAIL, NoMetadata, read_metadata

log = logging.getLogger(__name__)
# Marks metadata read by ranges: made again from the wheel once it is stored, verified.
PROVISIONAL = "ranges:"


async def remote_metadata(upstream: Upstream, url: str, size: int | None, filename: str) -> bytes:
    """METADATA of the wheel ``filename`` at ``url`` (``size`` from the page, if it gives one)
    in two to four ranged GETs. Raises NoMetadata (not a readable wheel, or not this one's),
    RangesIgnored (fall back to the whole file) or the upstream's errors."""
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

    return await read_metadata(read, total, filename)


async def stored_metadata(path: Path) -> bytes:
    """METADATA of a stored wheel (the file's name is the wheel's): a few small reads of the
    file (in a worker thread)."""
    fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    try:
        total = os.fstat(fd).st_size

        async def read(start: int, end: int) -> bytes:
            data = await anyio.to_thread.run_sync(os.pread, fd, end - start, start)
            if len(data) != end - start:
                raise NoMetadata("the stored file is shorter than its directory says")
            return data

        return await read_metadata(read, total, path.name)
    finally:
        os.close(fd)


class MadeMetadata:
    """The ``<wheel>.metadata`` files this proxy serves for wheels whose page gives none.

    Made once per wheel and stored like any file (under its own sha256, which is then known),
    from, in order: the stored wheel; ranged reads of the upstream's; the whole wheel, fetched
    into the cache, when the upstream ignores ranges or the zip cannot be read remotely.
    Offline, only what is stored can be used.
    """

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream | None,
        fetch_whole: Callable[[Target], Awaitable[StoredFile | None]] | None,
        *,
        failure_ttl: float = 600.0,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._fetch_whole = fetch_whole
        self._failures = MetadataFailures(storage, failure_ttl)

    @staticmethod
    def wanted(entry: DistFile) -> bool:
        """A wheel its index gives no metadata for (and whose hash, if any, is storable)."""
        return entry.lacks_wheel_metadata and (entry.sha256 is None or is_sha256(entry.sha256))

    async def stored(self, entry: DistFile) -> StoredFile | None:
        """The metadata file made earlier, if it is still stored."""
        return await anyio.to_thread.run_sync(self._stored_now, entry)

    def _key(self, entry: DistFile) -> str:
        return entry.sha256 or "url:" + entry.url

    def _stored_now(self, entry: DistFile) -> StoredFile | None:
        value = self._storage.made_metadata(self._key(entry))
        if value is None:
            return None
        sha = value.removeprefix(PROVISIONAL)
        if sha != value and self._wheel_now(entry) is not None:
            # Read by ranges (bytes no hash vouched for), and the verified wheel is here now:
            # the metadata is made again from it, which is the one to keep.
            return None
        return self._storage.stored(sha, entry.filename + METADATA_SUFFIX)

    def _wheel_now(self, entry: DistFile) -> StoredFile | None:
        sha = entry.sha256 or self._storage.hash_for_url(entry.url)
        return None if sha is None else self._storage.stored(sha, entry.filename)

    async def make(self, entry: DistFile) -> StoredFile | None:
        """Read the metadata out of the wheel and store it; None when it cannot be had here
        (offline without the wheel). Raises NoMetadata for a file that is not a readable
        wheel, and the upstream's errors. A failure remembered (``proxy.metafailures``) is
        raised again without asking the upstream, unless the wheel is stored by now."""
        wheel, failed = await anyio.to_thread.run_sync(self._wheel_or_failure, entry)
        provisional = False
        if wheel is not None and wheel.path is not None:
            data = await stored_metadata(wheel.path)
        elif self._upstream is None:
            return None
        elif failed is not None:
            raise failed
        else:
            try:
                data = await remote_metadata(self._upstream, entry.url, entry.size, entry.filename)
                provisional = True
            except (RangesIgnored, NoMetadata) as exc:
                log.info("%s: metadata from the whole wheel (%s)", entry.filename, exc)
                try:
                    data = await self._from_whole(entry)
                except (NoMetadata, UpstreamUnavailable) as failure:
                    await anyio.to_thread.run_sync(self._failures.remember, entry, failure)
                    raise
        return await anyio.to_thread.run_sync(self._store, entry, data, provisional)

    def _wheel_or_failure(self, entry: DistFile) -> tuple[StoredFile | None, Failure | None]:
        wheel = self._wheel_now(entry)
        return wheel, None if wheel is not None else self._failures.recall(entry)

    async def _from_whole(self, entry: DistFile) -> bytes:
        """METADATA from the whole wheel, fetched into the cache (verified by its sha256)."""
        target = Target(entry.url, entry.filename, entry.sha256, entry.size)
        wheel = await self._fetch_whole(target) if self._fetch_whole else None
        if wheel is None or wheel.path is None:
            # Online, announced: a 502 the client retries, never "not in this mirror".
            raise UpstreamUnavailable(
                f"could not fetch {entry.filename} whole to read its metadata"
            ) from None
        return await stored_metadata(wheel.path)

    def _store(self, entry: DistFile, data: bytes, provisional: bool) -> StoredFile:
        sha = hashlib.sha256(data).hexdigest()
        part = self._storage.part_path(sha, ".part")
        try:
            with part.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            stored = self._storage.commit(part, sha, entry.filename + METADATA_SUFFIX)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        mark = PROVISIONAL if provisional else ""
        self._storage.remember_made_metadata(self._key(entry), mark + sha)
        return stored
