"""The mirror: the one object the web layer, the prefetcher, verify and the CLI call to read and
change what the cache holds. It wraps the parts (storage, the page service, the filler, the
counters) so that callers never reach into them. What it answers is in ``proxy.answers``; it is
made of ``proxy.fileanswers`` (how a file request is answered), ``proxy.holdings`` (what the
mirror holds), ``proxy.counters`` (the figures read) and ``proxy.sizecap``
(eviction after fills), which only this object calls. ``proxy.runtime`` makes it from settings
(``Runtime.open`` for a server or a command, ``reading`` for a look at the cache).

    mirror = Mirror(storage, pages, stats, upstream, max_cache_size=, hand_over=, json_api=, ...)

    pages                                      (async; NotFound, RecordUnreadable, UpstreamError)
      page(project, allow_stale=False)         -> PageAnswer: record, rendered, outcome, serial
      peek(project)                            -> PageRecord | None, fresh in memory (not async)
      root()                                   -> RootAnswer: record, outcome, serial
      refresh(project, current, min_serial=, holding=)  -> PageRecord, asked of the upstream now
      stored_page(project)                     -> PageRecord | None, from disk only
      json_document(project, version)          -> JsonRecord (the legacy JSON API)
      upstream_listing()                       -> set of names the upstream lists now
    files                                      (async)
      file(project, filename, variant, head=, ranged=, range_header=, if_range=)
                                               -> Hit | Handover | Redirect | Stream | SizeOnly
                                                  | Partial | Refusal
      fetch(target, pinned=False, batched=False)  -> Download, ended (prefetch, verify);
                         batched: durable per batch (proxy.batchsync), not with an fsync each
      settle_batches()   the batched files stored so far made durable (a pass's end)
      metadata_from_wheel(target, (sha256, filename), batched=)  -> StoredFile | None
    projects                                   (async)
      forget(project)    drop its page (memory, disk); its files stay until evicted
      delete(project, record)  drop its page and every file it lists not held -> Forgotten
      remove(project)    it left the upstream: forget it and remember the 404
    what the mirror holds                      (blocking: call in a worker thread)
      hold(project, [HeldFile]) -> sha256s newly held: eviction never takes them
      release(project, [HeldFile]) -> sha256s no longer held by anyone
      held_files(project) -> [HeldFile] / iter_held() -> (project, HeldFile) for every row
      is_held(sha256, filename=None) / held_figures() -> {"files", "bytes"}
      publish(write=True) -> how many held files the bucket lacked a pin for (now written)
      stored_copy(sha256, filename, expected)  -> StoredFile | None (a wrong-size copy dropped)
      drop(sha256, filename, damaged=False)    -> bytes freed
      hash_for_url(url) / has_page(project) / files_changed(project)
      stored_totals()                          -> {"projects", "files", "bytes"} on disk
      list_projects(sort, after=, offset=, limit=)  -> ([ProjectFacts], as_of) (the query API)
      project_facts(record) / project_files(record) -> ProjectFacts / [FileFacts]
    what verify reads                          (blocking)
      page_records()     -> (project, PageRecord | None: unreadable) for every stored page
      hash_of(stored)    -> sha256 of its bytes now | None (gone)
      check_copies(stored) -> its other copies (a bucket's) found damaged and made again
      sweep_partials() -> count / recount()
      recover_batches()  -> files dropped: those a crashed batch named whose bytes are wrong
    the mirror's own state                     (blocking)
      hold_changes() / settle_changes(serial) / serial_answer(method, params) (the /pypi API)
      lease(name)        -> LeaseKeeper shared with other replicas | None (not shared)
      lock(name)         -> FileLock: one holder per cache directory (the scrub)
      state_file(name)   -> Path of a bookkeeping file (the prefetcher's database and lock)
      note(key) / set_note(key, value): small values every worker reads (the last scrub)
    counters                                   (async)
      figures() -> Figures (every process's counters, the cache's size); latency(); usable()
      count_request(route, outcome, seconds, project)  (not async: one request, once)
      stored_figures()   -> Figures from disk alone (blocking: a one-shot command)
      upstream_health()  -> the upstream's breakers per origin | None (offline; not async)

Invariants:
- A file answer is decided here (``proxy.fileanswers``), once per request: a hit, a download
  joined or started, the size alone, a short range passed through, or a typed refusal; a HEAD
  or a Range on a miss is one miss whichever. The outcome (``hit``/``miss``/``stale``) is
  carried by the answer; the request counter (``proxy.web.counting``) hands it back with the
  latency (``count_request``). Bytes served, bytes fetched, integrity
  errors and upstream errors are counted here (or by the parts this object wires), never by a
  caller.
- Nothing half-written is served: hits come from verified stored files, opened here (the
  descriptor is the caller's to close, through the response that sends it); downloads are read
  through ``proxy.follow``, which never hands out the last byte before verification.
- Callers never learn where a file is: they get descriptors (or, for a front server, the path
  ``Storage`` gives under its files directory), and name files by (sha256, filename) as pages
  give them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio

from proxy import serials
from proxy.answers import Figures, FileAnswer, PageAnswer, RootAnswer
from proxy.batchsync import batch_journal, recover
from proxy.catalog import FileFacts, Forgotten, ProjectFacts, SortKey, forget_project
from proxy.counters import Counters
from proxy.errors import NotFound
from proxy.fileanswers import FileAnswers
from proxy.filestore import StoredFile
from proxy.fill import Filler, Target
from proxy.follow import Download
from proxy.heldfiles import HeldFile
from proxy.holdings import Holdings
from proxy.jsonapi import JsonApi, JsonRecord
from proxy.lease import LeaseKeeper
from proxy.locks import FileLock
from proxy.models import PageRecord
from proxy.pageservice import PageService
from proxy.sidecar import store_from_wheel
from proxy.sizecap import SizeCap
from proxy.stats import Latency, Stats
from proxy.storage import Storage
from proxy.upstream import Upstream


class Mirror:
    """One per process. ``upstream`` None: offline, nothing is fetched. The downloads it starts
    count the bytes fetched and the integrity errors, and each one stored may start eviction
    when the cache is over ``max_cache_size``."""

    def __init__(
        self,
        storage: Storage,
        pages: PageService,
        stats: Stats,
        upstream: Upstream | None,
        *,
        max_cache_size: int | None = None,
        remote_timeout: float = 60.0,
        hand_over: bool = False,
        json_api: JsonApi | None = None,
        made_metadata: bool = False,
        redirect_expiry: float | None = None,
        memory_files: int = 0,
        metadata_failure_ttl: float = 600.0,
    ) -> None:
        self._storage = storage
        self._pages = pages
        self._stats = stats
        self._json = json_api  # None: the legacy JSON API is not served
        self._size_cap = SizeCap(storage, stats, max_cache_size)
        self._journals = storage.state_dir / "journal"
        self.filler: Filler | None = None  # None: offline
        if upstream is not None:
            self.filler = Filler(
                storage,
                upstream,
                on_fetched=lambda n: stats.add("bytes_fetched", n),
                on_corrupt=lambda: stats.add("integrity_errors"),
                on_committed=lambda _stored: self.after_fill(),
                remote_timeout=remote_timeout,
                max_stored_size=max_cache_size,
                journal=batch_journal(storage, self._journals),
            )
        self._files = FileAnswers(
            storage,
            pages,
            stats,
            upstream,
            self.filler,
            hand_over=hand_over,
            made_metadata=made_metadata,
            redirect_expiry=redirect_expiry,
            memory_files=memory_files,
            metadata_failure_ttl=metadata_failure_ttl,
        )
        self._held = Holdings(storage, stats)
        self._counters = Counters(storage, stats, upstream)

    @property
    def offline(self) -> bool:
        return self.filler is None

    # -- pages -------------------------------------------------------------------------------

    async def page(self, project: str, *, allow_stale: bool = False) -> PageAnswer:
        """A normalized project's page; raises NotFound, RecordUnreadable or UpstreamError."""
        record, outcome = await self._pages.lookup(project, allow_stale=allow_stale)
        rendered = record.rendered
        if self._pages.offline:
            rendered = await self._pages.held_view(record)
        return PageAnswer(record, rendered, outcome)

    def peek(self, project: str) -> PageRecord | None:
        """A page fresh in memory, without any wait: the whole cost of a hot hit (online only;
        None means "ask ``page``")."""
        return self._pages.peek(project)

    async def refresh(
        self,
        project: str,
        current: PageRecord | None,
        *,
        min_serial: int | None = None,
        holding: tuple[int | None, Collection[str]] | None = None,
    ) -> PageRecord:
        """Ask the upstream for a page now and store it (see ``PageService.fetch_project``)."""
        return await self._pages.fetch_project(
            project, current, min_serial=min_serial, holding=holding
        )

    async def json_document(self, project: str, version: str | None) -> JsonRecord:
        """The legacy JSON API's document of a project (or one version of it), made from its
        simple page so that the file URLs it gives are ones this mirror serves."""
        if self._json is None:
            raise NotFound("the JSON API is not served here")
        page = (await self.page(project)).record
        return await self._json.get(page, version)

    async def stored_page(self, project: str) -> PageRecord | None:
        return await self._pages.stored_project(project)

    async def upstream_listing(self) -> set[str]:
        return await self._pages.upstream_listing()

    async def root(self) -> RootAnswer:
        record, outcome = await self._pages.lookup_root()
        return RootAnswer(record, outcome)

    async def forget(self, project: str) -> None:
        """Drop a project's page from memory and disk; its files stay until evicted, and every
        worker follows within about a second."""
        self._pages.forget(project)  # memory: on the event loop, which owns it
        await anyio.to_thread.run_sync(self._storage.delete_page, project)

    async def delete(self, project: str, record: PageRecord) -> Forgotten:
        """Drop a project's page, its JSON API records and every file it lists that is not
        held; held files stay, for the mirror's next pass to list again."""
        done = await anyio.to_thread.run_sync(forget_project, self._storage, record)
        self._pages.forget(project)
        return done

    async def remove(self, project: str) -> None:
        """The project left the upstream (confirmed): drop its page and remember the 404."""
        self._pages.forget(project)
        await anyio.to_thread.run_sync(self._pages.remove, project)

    def files_changed(self, project: str) -> None:
        """Files a project lists were added or removed without a new page (blocking)."""
        self._storage.mark_changed(project)

    # -- files -------------------------------------------------------------------------------

    async def file(
        self,
        project: str,
        filename: str,
        variant: str | None = None,
        *,
        head: bool = False,
        ranged: bool = False,
        range_header: str | None = None,
        if_range: str | None = None,
    ) -> FileAnswer:
        """The answer to one request for a file listed on ``project``'s page (a normalized
        name; ``variant`` picks among entries with one filename). ``range_header``, given,
        lets a Range on a miss be passed through to the upstream instead of waiting."""
        return await self._files.decide(
            project,
            filename,
            variant,
            head=head,
            ranged=ranged,
            range_header=range_header,
            if_range=if_range,
        )

    async def fetch(
        self, target: Target, *, pinned: bool = False, batched: bool = False
    ) -> Download:
        """Download ``target`` into the store (or join the download under way) and wait until it
        ended, either way: the caller reads ``error``, ``sha256`` and ``written``."""
        return await self._files.fetch(target, pinned=pinned, batched=batched)

    async def metadata_from_wheel(
        self, target: Target, wheel: tuple[str, str], *, batched: bool = False
    ) -> StoredFile | None:
        """Store a wheel's ``.metadata`` from the stored wheel (``wheel``: sha256, filename),
        if its bytes hash to what the page says; None: fetch it (see ``proxy.sidecar``)."""
        if self.filler is None:
            return None
        stored = await store_from_wheel(self._storage, self.filler, target, wheel, batched)
        if stored is not None:
            self.after_fill()
        return stored

    async def settle_batches(self) -> None:
        if self.filler is not None:
            await self.filler.settle()

    def recover_batches(self) -> int:
        return recover(self._journals, self._held.recheck)

    # -- what the mirror holds (blocking: call in a worker thread) ---------------------------

    def hold(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        """``project`` holds ``files`` (``proxy.heldfiles``; a bucket's pin written first):
        no eviction takes them. A size None keeps the one recorded. The sha256s newly held."""
        return self._held.hold(project, files)

    def release(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        """``project`` no longer holds ``files`` (they stay stored); the sha256s nobody holds
        now (their bucket pins deleted), which eviction may take again."""
        return self._held.release(project, files)

    def held_files(self, project: str) -> list[HeldFile]:
        return self._held.held_files(project)

    def iter_held(self) -> Iterator[tuple[str, HeldFile]]:
        return self._held.iter_held()

    def is_held(self, sha256: str, filename: str | None = None) -> bool:
        """Held here or pinned by any replica; with ``filename``: on this replica's list."""
        return self._held.is_held(sha256, filename)

    def held_figures(self) -> dict[str, int]:
        return self._held.held_figures()

    def publish(self, *, write: bool = True) -> int:
        """Held files the bucket has no pin for (0 without one), their pins written unless
        ``write`` is False; never deletes a pin (another replica may hold what this lacks)."""
        return self._held.publish(write=write)

    def stored_copy(
        self, sha256: str, filename: str, expected: int | None = None
    ) -> StoredFile | None:
        """The stored file, if the store holds it whole: a copy of another size than
        ``expected`` (truncated, appended to) is dropped here and None returned."""
        return self._held.stored_copy(sha256, filename, expected)

    def drop(self, sha256: str, filename: str, *, damaged: bool = False) -> int:
        """Delete one stored file; the bytes freed (0 if it was gone). ``damaged``: its bytes
        were found wrong (verify), which counts as an integrity error."""
        return self._held.drop(sha256, filename, damaged=damaged)

    def hash_for_url(self, url: str) -> str | None:
        """The sha256 found when a file its page gave no hash for was downloaded."""
        return self._held.hash_for_url(url)

    def has_page(self, project: str) -> bool:
        return self._held.has_page(project)

    def stored_totals(self) -> dict[str, int]:
        """What the cache has on disk: projects with a page, files and their bytes (what it
        must keep is the held list: ``held_figures``)."""
        return self._held.stored_totals()

    def list_projects(
        self, sort: SortKey, *, after: str | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[ProjectFacts], float]:
        """One page of the projects the cache holds and when (epoch seconds) its rows were
        read: ``after`` a name in name order (costs what it shows), else rows ``offset`` on in
        ``sort`` order, largest first (an order other than by name is read whole once and kept
        for ``catalog.SORTED_MAX_AGE`` seconds)."""
        return self._held.list_projects(sort, after=after, offset=offset, limit=limit)

    def project_facts(self, record: PageRecord) -> ProjectFacts:
        """What the cache holds of the project a stored page describes."""
        return self._held.project_facts(record)

    def project_files(self, record: PageRecord) -> list[FileFacts]:
        """Each file the page lists: held or not, pinned or not, its size and last access."""
        return self._held.project_files(record)

    # -- what verify reads (blocking) --------------------------------------------------------

    def page_records(self) -> Iterator[tuple[str, PageRecord | None]]:
        """Every stored page as (project, record); the record None when it cannot be read
        (another format, damage): to report, not to stop the check. Pages dropped while this
        walks are left out."""
        return self._held.page_records()

    def hash_of(self, stored: StoredFile) -> str | None:
        """The sha256 of a stored file's bytes as they are now; None when it cannot be read."""
        return self._held.hash_of(stored)

    def check_copies(self, stored: StoredFile) -> int:
        """``stored``'s bytes were found right: hash its other copies too (the bucket's object
        behind a local copy); each damaged one is deleted and made again from ``stored``,
        counted as an integrity error. How many were (0 for a store of one copy)."""
        return self._held.check_copies(stored)

    def sweep_partials(self) -> int:
        """Remove partial downloads no download is writing; how many."""
        return self._held.sweep_partials()

    def recount(self) -> None:
        """Count the stored files and their bytes again (after verify dropped some)."""
        self._held.recount()

    # -- the mirror's own state (blocking) ---------------------------------------------------

    def hold_changes(self) -> None:
        """Followers of this mirror see changes only up to a completed pass from now on."""
        self._storage.changelog.hold()

    def settle_changes(self, serial: int | None) -> None:
        """A pass completed up to ``serial``: followers may see what it changed."""
        self._storage.changelog.settle(serial)

    def serial_answer(self, method: str, params: tuple[Any, ...]) -> bytes:
        """The XML-RPC response body to a serial API call (``proxy.serials``) about what this
        mirror holds, from its changelog."""
        return serials.answer(method, params, self._storage.changelog)

    def lease(self, name: str) -> LeaseKeeper | None:
        """The lease ``name`` every replica over this store sees (in the bucket), so that they
        take turns; None when the store is this machine's alone (a local lock is enough)."""
        if self._storage.shared is None:
            return None
        return self._storage.lease(name)

    def lock(self, name: str) -> FileLock:
        """The exclusive lock ``name`` of this cache directory (its processes take turns)."""
        return FileLock(self._storage.state_path(name))

    def state_file(self, name: str) -> Path:
        """Where the bookkeeping file ``name`` of this cache lives (the prefetcher's database
        and lock): the storage's to say, so no caller knows the cache directory's layout."""
        return self._storage.state_path(name)

    def note(self, key: str) -> Any:
        """A small value kept with the cache, the same for every worker (None if never set)."""
        return self._storage.index.get(key)

    def set_note(self, key: str, value: Any) -> None:
        self._storage.index.set(key, value)

    # -- counters ----------------------------------------------------------------------------

    def count_request(
        self, route: str, outcome: str, seconds: float, project: str | None = None
    ) -> None:
        """One answered request, counted once: by the web layer's outermost middleware
        (``proxy.web.counting``) when the answer is complete; hot hits included."""
        self._stats.request(route, outcome, seconds, project)  # the hot path: no hop more

    async def figures(self) -> Figures:
        """Every process's counters, with this one's not yet written added, and what the
        mirror holds."""
        return await self._counters.figures()

    def stored_figures(self) -> Figures:
        """The counters as every process wrote them, and what the mirror holds (blocking): for
        a command that serves nothing and so counted nothing itself."""
        return self._counters.stored_figures()

    async def latency(self) -> list[Latency]:
        """The request latency histogram, every process's."""
        return await self._counters.latency()

    def upstream_health(self) -> dict[str, Any] | None:
        """The upstream's circuit breakers, per origin; None offline."""
        return self._counters.upstream_health()

    async def usable(self) -> bool:
        """Whether the file store can be reached (the health check)."""
        return await anyio.to_thread.run_sync(self._storage.files_usable)

    # -- the size cap ------------------------------------------------------------------------

    def after_fill(self) -> None:
        """A file was added: evict in the background if the cache went over its cap."""
        self._size_cap.after_fill()

    async def close(self) -> None:
        """Let downloads under way finish (for a while), then stop them and any eviction."""
        if self.filler is not None:
            with anyio.move_on_after(10):
                await self.filler.wait_all()
            await self.filler.cancel_all()
        await self.settle()

    async def settle(self) -> None:
        """Wait for background work (eviction) to end: for shutdown and tests."""
        await self._size_cap.settle()
