"""Cache-or-fetch for index pages: the project pages, and the root listing through
``proxy.rootlisting`` (which shares this memory and these fetches under way).

A fresh page is a dictionary lookup. A stale or missing one is fetched from the upstream (one
request per project however many clients ask at once), revalidated with its ETag, never
replaced by a page with an older serial, and served stale if the upstream fails.

Another process (a worker, the prefetcher, verify, an admin action) may change a page or its
files at any time: the copy in memory is checked against the project's generation counter in
the cache at most once a second (``proxy.generations``), so every worker serves what the cache
holds within about a second, while a hot page still costs no disk read per request. Which
upstream answers may replace a stored page is decided in ``proxy.trust``.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Collection, Sequence

import anyio

from proxy.errors import NotFound, RecordUnreadable, StalePage, SuspectPage, UpstreamError
from proxy.fetchedpages import parse_project
from proxy.generations import Generations
from proxy.memcache import MemoryLRU, record_size
from proxy.models import PageRecord, Rendered, RootRecord
from proxy.offlineviews import OfflineViews
from proxy.parse import storable_files
from proxy.render import render_project
from proxy.rootlisting import RootListing
from proxy.singleflight import SharedCalls
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.trust import distrust, distrust_held, older
from proxy.upstream import Upstream

log = logging.getLogger(__name__)


class PageService:
    """The project pages and the root listing, cache-or-fetch (see the module's docstring);
    ``upstream`` None: offline. Not to be confused with ``Storage.index``, the diskcache the
    pages are stored in."""

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream | None,
        stats: Stats,
        *,
        ttl: float,
        negative_ttl: float,
        memory_bytes: int,
        allowed_file_hosts: Sequence[str] = (),
        made_metadata: bool = False,
    ) -> None:
        self._allowed_hosts = tuple(allowed_file_hosts)
        self._made_metadata = made_metadata  # wheels without metadata announced with it
        self._storage = storage
        self._upstream = upstream  # None: offline, never ask
        self._stats = stats
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._memory: MemoryLRU[PageRecord | RootRecord] = MemoryLRU(memory_bytes)
        self._calls = SharedCalls()  # one fetch per project (and root) however many ask
        self._offline = OfflineViews(storage, memory_bytes // 4, made_metadata)
        self._generations = Generations(storage, lambda: len(self._memory))
        self._root = RootListing(
            storage,
            upstream,
            stats,
            self._memory,
            self._calls,
            ttl=ttl,
            negative_ttl=negative_ttl,
        )

    @property
    def offline(self) -> bool:
        return self._upstream is None

    def _same_hosts(self, record: PageRecord) -> bool:
        # A page filtered under another allowed_file_hosts is refetched whole (no ETag).
        return record.allowed_hosts == self._allowed_hosts

    def _current(self, record: PageRecord) -> bool:
        return self._fresh(record.fetched_at) and self._same_hosts(record)

    def _fresh(self, fetched_at: float) -> bool:
        return time.time() - fetched_at < self._ttl

    def _remember(self, key: str, record: PageRecord) -> None:
        self._memory.put(key, record, record_size(record.rendered))

    def _unchanged(self, project: str) -> bool:
        """Whether the copy of ``project`` in memory is still what the cache holds; if not,
        it is dropped from memory here."""
        if self._generations.unchanged(project):
            return True
        self._memory.pop(project)
        self._offline.pop(project)
        return False

    def peek(self, project: str) -> PageRecord | None:
        """The page if it is in memory and fresh: the whole cost of a hot hit. Offline pages
        are filtered per request, so they take the ordinary path."""
        record = self._memory.get(project)
        if (
            isinstance(record, PageRecord)
            and not self.offline
            and self._current(record)
            and self._unchanged(project)
        ):
            return record
        return None

    async def project(self, project: str, *, allow_stale: bool = False) -> PageRecord:
        """The record for a normalized project name; raises NotFound or UpstreamError.

        ``allow_stale`` (used by file requests) takes any stored page without revalidating.
        """
        return (await self.lookup(project, allow_stale=allow_stale))[0]

    async def lookup(self, project: str, *, allow_stale: bool = False) -> tuple[PageRecord, str]:
        """The record and how it was found: ``hit`` (from the cache), ``miss`` (from the
        upstream, or revalidated) or ``stale`` (the upstream failed; the stored page). The
        caller counts the request (``proxy.web.counting``); nothing is counted here."""
        record = self._memory.get(project)
        if isinstance(record, PageRecord) and not self._unchanged(project):
            record = None
        if isinstance(record, PageRecord) and (
            allow_stale or self.offline or self._current(record)
        ):
            return record, "hit"
        generation, stored = await anyio.to_thread.run_sync(self._load, project)
        if stored is not None and (record is None or stored.fetched_at >= record.fetched_at):
            record = stored
            self._remember(project, stored)
            self._generations.saw(project, generation)
        current = record if isinstance(record, PageRecord) else None
        if current is not None and (allow_stale or self.offline or self._current(current)):
            return current, "hit"
        if self._upstream is None:
            if project in self._storage.unreadable:
                raise RecordUnreadable(
                    f"the stored page of {project} was written in a format this version cannot"
                    " read; it is fetched again once the proxy is online"
                )
            raise NotFound(f"{project} is not in this mirror, and the proxy is offline")
        if current is None and await anyio.to_thread.run_sync(self._storage.is_missing, project):
            raise NotFound(f"the upstream has no project {project} (remembered)")
        return await self._calls.run(project, lambda: self._refresh_project(project, current))

    async def _refresh_project(
        self, project: str, current: PageRecord | None
    ) -> tuple[PageRecord, str]:
        try:
            return await self.fetch_project(project, current), "miss"
        except NotFound as exc:
            if current is None:
                raise
            # One 404 (a CDN edge, a deploy) must not take away a page we hold: only the
            # prefetcher, with the upstream's listing to confirm, removes a project. Ask again
            # after negative_ttl rather than on every request.
            log.warning("serving stored %s although the upstream answered: %s", project, exc)
            self._retry_later(current)
            return current, "stale"
        except UpstreamError as exc:
            self._upstream_error()
            if current is None:
                raise
            log.warning("serving stale %s: %s", project, exc)
            if isinstance(exc, SuspectPage):  # a 200 the breaker does not count: pace it here
                self._retry_later(current)
            return current, "stale"

    def _upstream_error(self) -> None:
        if self._upstream is not None:
            self._stats.upstream_error(self._upstream.breaker.primary)

    def _retry_later(self, current: PageRecord) -> None:
        """Serve ``current`` from memory for negative_ttl before asking the upstream again."""
        retry_at = time.time() - self._ttl + min(self._negative_ttl, self._ttl)
        current.fetched_at = max(current.fetched_at, retry_at)

    async def stored_project(self, project: str) -> PageRecord | None:
        return (await anyio.to_thread.run_sync(self._load, project))[1]

    def _load(self, project: str) -> tuple[int, PageRecord | None]:
        """The stored record and its generation (blocking). A record stored by an older version
        may list entries that cannot be stored; they are left out here, as parsing now does."""
        generation, record = self._storage.load_page_at(project)
        if record is None:
            return generation, None
        dropped: list[str] = []
        files = storable_files(record.page.files, dropped)
        if not dropped:
            return generation, record
        log.warning("%s: stored page lists %d unusable entries; left out", project, len(dropped))
        page = dataclasses.replace(record.page, files=files)
        cleaned = PageRecord(
            project=record.project,
            page=page,
            rendered=render_project(page, project, self._made_metadata),
            fetched_at=record.fetched_at,
            upstream_etag=None,  # the stored bytes are not what the upstream's ETag names
            allowed_hosts=record.allowed_hosts,
        )
        return generation, cleaned

    async def fetch_project(
        self,
        project: str,
        current: PageRecord | None,
        *,
        min_serial: int | None = None,
        holding: tuple[int | None, Collection[str]] | None = None,
    ) -> PageRecord:
        """Ask the upstream for a project's page now (conditionally) and store it.

        With ``min_serial`` (the prefetcher knows a change happened), a page older than that
        raises StalePage instead of being accepted. A page that does not look like the project
        (see ``proxy.trust``) raises SuspectPage and the stored one stays; ``holding`` (the
        serial and file names the mirror holds) stands in for a stored page that went missing.
        NotFound leaves the stored page alone (removing a project is the prefetcher's decision,
        see ``remove``); with no page stored, the 404 is remembered for negative_ttl.
        """
        if self._upstream is None:
            raise NotFound(f"{project}: the proxy is offline")
        try:
            fetched = await self._upstream.get_page(
                project + "/",
                current.upstream_etag if current and self._same_hosts(current) else None,
            )
        except NotFound:
            if current is None:
                try:
                    await anyio.to_thread.run_sync(self._remember_missing, project)
                except (OSError, sqlite3.Error) as exc:
                    log.error("could not record that %s is gone: %s", project, exc)
            raise
        now = time.time()
        if fetched is None:
            if current is None:
                raise UpstreamError(f"upstream answered 304 for {project} without a condition")
            if older(current.page.serial, min_serial):
                raise StalePage(f"{project}: upstream still has serial {current.page.serial}")
            self._stats.add("page_revalidated")
            current.fetched_at = now
            await self._save_page(current)
            return current
        dropped: list[str] = []
        page = await anyio.to_thread.run_sync(
            parse_project, fetched, project, self._allowed_hosts, dropped
        )
        if dropped:
            # One bad entry must not break the page: it is left out, and said so.
            self._stats.add("entries_dropped", len(dropped))
            log.warning(
                "%s: left out %d entries: %s", project, len(dropped), "; ".join(dropped[:5])
            )
        if older(page.serial, min_serial):
            raise StalePage(f"{project}: upstream sent serial {page.serial}, expected {min_serial}")
        if current is not None and older(page.serial, current.page.serial):
            # A stale copy (a CDN edge that lags): keep ours rather than go backwards.
            log.warning(
                "upstream sent %s at serial %s, older than stored %s; keeping stored",
                project,
                page.serial,
                current.page.serial,
            )
            current.fetched_at = now
            return current
        if current is not None:
            reason = distrust(current, page, self._allowed_hosts)
        else:
            reason = distrust_held(*holding, page) if holding is not None else None
        if reason:
            self._stats.add("pages_distrusted")
            log.warning("not replacing the stored page of %s: %s", project, reason)
            raise SuspectPage(f"{project}: {reason}; keeping the stored page")
        rendered = await anyio.to_thread.run_sync(
            render_project, page, project, self._made_metadata
        )
        record = PageRecord(
            project=project,
            page=page,
            rendered=rendered,
            fetched_at=now,
            upstream_etag=fetched.etag,
            allowed_hosts=self._allowed_hosts,
        )
        await self._save_page(record)
        return record

    async def _save_page(self, record: PageRecord) -> None:
        """Store a page and keep it in memory, with the generation the save gave it."""
        try:
            generation = await anyio.to_thread.run_sync(self._storage.save_page, record)
        except (OSError, sqlite3.Error) as exc:
            log.error("could not store %s: %s", record.project, exc)
        else:
            self._generations.saw(record.project, generation)
        self._remember(record.project, record)

    async def held_view(self, record: PageRecord) -> Rendered:
        """The page as offline clients must see it: only files the cache can serve, so that
        pip and uv never pick a file they cannot get."""
        return await self._offline.view(record, self._generations.files())

    def _remember_missing(self, project: str) -> None:
        # Only when nothing is stored: a page someone else stored meanwhile wins.
        if not self._storage.has_page(project):
            self._storage.mark_missing(project, self._negative_ttl)

    def remove(self, project: str) -> None:
        """The project left the upstream (the prefetcher confirmed it): drop its stored page
        for good and remember the 404 (blocking; the caller drops the copy in memory, on the
        event loop: ``forget``)."""
        self._storage.delete_page(project)
        self._storage.mark_missing(project, self._negative_ttl)

    async def upstream_listing(self) -> set[str]:
        """The normalized names the upstream's root index lists now (no cache): what confirms
        that a project which answers 404 has really left."""
        return await self._root.upstream_names()

    def forget(self, project: str) -> None:
        """Drop a project's page from memory (after another component changed it on disk)."""
        self._memory.pop(project)
        self._offline.pop(project)
        self._generations.forget(project)

    async def root(self) -> RootRecord:
        return (await self.lookup_root())[0]

    async def lookup_root(self) -> tuple[RootRecord, str]:
        """The root listing and how it was found, as ``lookup`` says (``proxy.rootlisting``)."""
        return await self._root.lookup()
