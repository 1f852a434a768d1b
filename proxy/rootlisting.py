"""Cache-or-fetch for the root listing (/simple/), as ``proxy.pageservice`` does for a project's
page: kept in the same memory and fetched under the same single flight, under a key of its own;
served stale if the upstream fails, and not replaced by one that looks like a maintenance page
(``proxy.trust``). Offline with none stored, it lists what the mirror holds.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import anyio

from proxy.errors import NotFound, UpstreamError
from proxy.fetchedpages import parse_root
from proxy.memcache import MemoryLRU, record_size
from proxy.models import PageRecord, ProjectListing, RootRecord
from proxy.names import normalize
from proxy.render import render_root
from proxy.singleflight import SharedCalls
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.trust import distrust_root
from proxy.upstream import Upstream

log = logging.getLogger(__name__)
# The root listing's key in memory and among fetches under way: never a project's name (a
# project may be called "root"), so the two can never be handed each other's record.
_ROOT = "/"


class RootListing:
    """The root listing; ``upstream`` None: offline. Made by ``PageService``, which hands it
    its memory and its fetches under way."""

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream | None,
        stats: Stats,
        memory: MemoryLRU[PageRecord | RootRecord],
        calls: SharedCalls,
        *,
        ttl: float,
        negative_ttl: float,
    ) -> None:
        self._storage = storage
        self._upstream = upstream  # None: offline, never ask
        self._stats = stats
        self._memory = memory
        self._calls = calls
        self._ttl = ttl
        self._negative_ttl = negative_ttl

    @property
    def offline(self) -> bool:
        return self._upstream is None

    def _fresh(self, fetched_at: float) -> bool:
        return time.time() - fetched_at < self._ttl

    def _remember(self, record: RootRecord) -> None:
        self._memory.put(_ROOT, record, record_size(record.rendered))

    async def upstream_names(self) -> set[str]:
        """The normalized names the upstream's root index lists now (no cache): what confirms
        that a project which answers 404 has really left."""
        if self._upstream is None:
            raise UpstreamError("the proxy is offline")
        fetched = await self._upstream.get_page("")
        if fetched is None:
            raise UpstreamError("upstream answered 304 for the root index without a condition")
        listing = await anyio.to_thread.run_sync(parse_root, fetched)
        return {normalize(name) for name, _serial in listing.projects}

    async def lookup(self) -> tuple[RootRecord, str]:
        """The root listing and how it was found, as ``PageService.lookup`` says."""
        record = self._memory.get(_ROOT)
        if isinstance(record, RootRecord) and (self.offline or self._fresh(record.fetched_at)):
            return record, "hit"
        stored = await anyio.to_thread.run_sync(self._storage.load_root)
        if stored is not None:
            self._remember(stored)
            if self.offline or self._fresh(stored.fetched_at):
                return stored, "hit"
        if self._upstream is None:
            return await anyio.to_thread.run_sync(self._offline_root), "hit"
        return await self._calls.run(_ROOT, lambda: self._refresh_root(stored))

    def _offline_root(self) -> RootRecord:
        # Offline with no stored root: list what the mirror holds, with the serials of its
        # pages (what a follower of this proxy compares), and the changelog's in meta.
        names = sorted(self._storage.page_projects())
        changelog = self._storage.changelog
        serials = changelog.packages_with_serial()
        listing = ProjectListing(
            projects=tuple((n, serials.get(n)) for n in names),
            serial=changelog.last_serial() or None,
        )
        return RootRecord(listing=listing, rendered=render_root(listing), fetched_at=time.time())

    async def _refresh_root(self, current: RootRecord | None) -> tuple[RootRecord, str]:
        assert self._upstream is not None
        try:
            fetched = await self._upstream.get_page("", current.upstream_etag if current else None)
        except (UpstreamError, NotFound) as exc:
            self._stats.upstream_error(self._upstream.breaker.primary)
            if current is None:
                raise UpstreamError(str(exc)) from exc
            log.warning("serving stale root index: %s", exc)
            return current, "stale"
        now = time.time()
        if fetched is None:
            assert current is not None
            current.fetched_at = now
            await self._save(self._storage.save_root, current)
            return current, "miss"
        listing = await anyio.to_thread.run_sync(parse_root, fetched)
        if current is not None and (reason := distrust_root(current.listing, listing)):
            # A maintenance page must not empty /simple/; ask again after negative_ttl.
            self._stats.add("pages_distrusted")
            log.warning("not replacing the stored root index: %s", reason)
            retry_at = now - self._ttl + min(self._negative_ttl, self._ttl)
            current.fetched_at = max(current.fetched_at, retry_at)
            return current, "stale"
        rendered = await anyio.to_thread.run_sync(render_root, listing)
        record = RootRecord(
            listing=listing, rendered=rendered, fetched_at=now, upstream_etag=fetched.etag
        )
        await self._save(self._storage.save_root, record)
        self._remember(record)
        return record, "miss"

    async def _save(self, save: Callable[[Any], None], record: Any) -> None:
        """Store a record; a full or failing disk costs the cache entry, not the answer."""
        try:
            await anyio.to_thread.run_sync(save, record)
        except (OSError, sqlite3.Error) as exc:
            log.error("could not store %s: %s", getattr(record, "project", "root index"), exc)
