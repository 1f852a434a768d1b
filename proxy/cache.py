"""The mirror: the one object the web layer, the prefetcher, verify and the CLI call to read and
change what the cache holds. It wraps the parts (storage, the page service, the filler, the
counters) so that callers never reach into them. What it answers is in ``proxy.answers``.

    mirror = Mirror(storage, pages, stats, upstream, max_cache_size=, hand_over=, json_api=)

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
                                               -> Hit | Handover | Stream | SizeOnly | Refusal
      fetch(target, pinned=False)              -> Download, ended (prefetch, verify)
    projects                                   (async)
      forget(project)    drop its page (memory, disk); its files stay until evicted
      delete(project, record)  drop its page and every file it lists not held -> Forgotten
      remove(project)    it left the upstream: forget it and remember the 404
    what the mirror holds                      (blocking: call in a worker thread)
      hold(sha256) -> newly? / release(sha256) / is_held(sha256): pins eviction never takes
      stored_copy(sha256, filename, expected)  -> StoredFile | None (a wrong-size copy dropped)
      drop(sha256, filename, damaged=False)    -> bytes freed
      holds()                                  -> {"projects", "files", "bytes"}
    counters                                   (async)
      figures() -> Figures (every process's counters, the cache's size); latency(); usable()

Invariants:
- A file answer is decided here, once per request: a hit, a download joined or started, or a
  typed refusal; a HEAD or a Range on a miss waits for the whole verified file and is still one
  miss. The outcome (``hit``/``miss``/``stale``) is carried by the answer; the request counter
  (``proxy.web.counting``) takes it with the latency. Bytes served, bytes fetched, integrity
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

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Collection

import anyio

from proxy.answers import (
    Figures,
    FileAnswer,
    Handover,
    Hit,
    PageAnswer,
    Partial,
    Redirect,
    Refusal,
    RootAnswer,
    SizeOnly,
    Stream,
)
from proxy.catalog import Forgotten, forget_project
from proxy.errors import FillFailed, NotFound, RecordUnreadable, UpstreamError
from proxy.evict import over_cap
from proxy.filestore import StoredFile
from proxy.fill import Filler, Target
from proxy.follow import Download, RemoteDownload, read_download, wait_done
from proxy.jsonapi import JsonApi, JsonRecord
from proxy.locate import METADATA_SUFFIX, find_entry, locate
from proxy.metasynth import MadeMetadata
from proxy.models import PageRecord
from proxy.origins import origin_of
from proxy.pageservice import PageService
from proxy.ranges import Unsatisfiable, parse_range
from proxy.sharedevict import evict_once
from proxy.stats import Latency, Stats, latency, series, top_projects, totals, upstream_errors
from proxy.storage import Storage
from proxy.upstream import Upstream
from proxy.wheelmeta import NoMetadata

log = logging.getLogger(__name__)
TOUCH_EVERY = 600.0  # seconds between access-time updates of one file (a hot inode is not
# written on every hit; eviction needs minutes, not microseconds)
MAX_TOUCHED = 100_000
PASS_RANGE_MAX = 8 * 1024**2  # a Range on a miss up to this size is read from the upstream


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
    ) -> None:
        self._storage = storage
        self._pages = pages
        self._upstream = upstream
        self._stats = stats
        self._cap = max_cache_size
        self._hand_over = hand_over  # hits on this disk go to a front server (accel_redirect)
        # Hits only in the shared bucket are redirected there for this long (s3_redirect).
        self._redirect_expiry = redirect_expiry
        self._json = json_api  # None: the legacy JSON API is not served
        self._touched: dict[tuple[str, str], float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._evicting = False
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
            )
        # <wheel>.metadata for wheels the index gives none for (made from the wheel itself).
        self._made = (
            MadeMetadata(storage, upstream, self._fetch_whole if upstream is not None else None)
            if made_metadata
            else None
        )

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
        ranged = ranged or range_header is not None
        if self._made is not None and filename.endswith(METADATA_SUFFIX):
            made = await self._made_file(project, filename, variant, head=head, ranged=ranged)
            if made is not None:
                return made
        try:
            located = await locate(self._pages, self._storage, project, filename, variant)
        except NotFound as exc:
            return Refusal("not_found", str(exc))
        except RecordUnreadable as exc:
            return Refusal("unavailable", str(exc))
        except UpstreamError as exc:
            return Refusal("upstream_failed", f"the upstream index is unavailable: {exc}")
        if located.damaged:
            self._stats.add("integrity_errors")
        stored = located.stored
        if stored is not None and stored.path is None:
            # Only in the shared bucket: redirected there (s3_redirect), or a GET sent as it is
            # copied here and verified; HEAD and Range wait for the verified local copy.
            if self._redirect_expiry is not None:
                url = self._storage.presign(stored, self._redirect_expiry)
                if url is not None:
                    self._touch(stored)
                    return Redirect(url, stored.sha256)
            chunks = self._storage.stream_in(stored)
            if not head and not ranged and chunks is not None:
                self._touch(stored)
                return Stream(chunks, stored.size, stored.sha256, self._served, outcome="hit")
            stored = await anyio.to_thread.run_sync(self._storage.local_copy, stored)
        if stored is not None:
            handover = self._handover(stored, head=head, ranged=ranged)
            if handover is not None:
                return handover
            fd = self._open(stored)
            if fd is not None:  # else evicted since it was found: fetched again
                return Hit(fd, stored.sha256, "hit", self._served)
        filler = self.filler
        if filler is None:
            if located.damaged:
                return Refusal(
                    "unavailable",
                    f"the stored copy of {filename} was damaged and dropped; the proxy is offline",
                )
            return Refusal(
                "not_found", f"{filename} is not in this mirror, and the proxy is offline"
            )
        target = located.target
        too_big = filler.too_big(target)
        if head and target.size is not None:
            # The page gives the size: a HEAD needs no byte of the file (uv asks one before
            # its ranges), and starts no download.
            return SizeOnly(target.size, target.sha256, ranges=not too_big)
        if range_header is not None and if_range is None and not too_big:
            partial = await self._pass_range(target, range_header)
            if partial is not None:
                return partial
        download, source = await self._begin(filler, target)
        if download.done and download.error and isinstance(download, RemoteDownload):
            # Another worker's download we came to follow ended without a file we could
            # open (stored and evicted at once, or failed): fetch it ourselves, once.
            download.release()
            download, source = await self._begin(filler, target)
        if download.done and download.error:
            if source is not None:
                os.close(source)
            download.release()
            if download.not_found:
                return Refusal("not_found", f"the upstream has no {filename}")
            self._upstream_error(target)
            return Refusal(
                "upstream_failed", f"could not fetch {filename} from the upstream: {download.error}"
            )
        if not too_big and (head or ranged):
            return await self._whole(download, source, filename)

        def sent(n: int) -> None:
            self._stats.add("bytes_served", n)
            download.release()  # also when the client left before the body began

        # A file too big to keep answers a Range with the whole file: a 200 is always correct.
        return Stream(read_download(download, source), download.total, target.sha256, sent)

    async def _begin(self, filler: Filler, target: Target) -> tuple[Download, int | None]:
        download = filler.start(target)
        try:
            # Our own descriptor at once, before any wait: the download can end and its file be
            # evicted while this request waits, and the reader must still have the bytes.
            source = download.take_source()
        except FillFailed:
            source = None
        await download.wait_ready()
        if download.done and download.error and source is not None:
            os.close(source)
            source = None
        return download, source

    async def _pass_range(self, target: Target, range_header: str) -> Partial | None:
        """A Range on a miss read from the upstream while the whole file is fetched for the
        cache; None to wait for the verified file instead (no size known, a range reaching
        the last byte, a large one, an upstream that ignores ranges or errs)."""
        assert self.filler is not None and self._upstream is not None
        size = target.size
        if size is None:
            return None
        try:
            wanted = parse_range(range_header, size)
        except Unsatisfiable:
            return None  # the stored file's answer says 416
        # Never the last byte: what a client assembles from ranges cannot complete bad bytes,
        # as its last range waits for the verified file. Large ranges are cheaper from it.
        if wanted is None or wanted.end >= size - 1 or wanted.length > PASS_RANGE_MAX:
            return None
        self.filler.start(target).release()  # the fill goes on for the cache, unread here
        try:
            part = await self._upstream.read_range(
                target.url, f"{wanted.start}-{wanted.end}", wanted.length
            )
        except UpstreamError as exc:
            log.info("range of %s not passed through: %s", target.filename, exc)
            return None
        if part.start != wanted.start or len(part.data) != wanted.length or part.total != size:
            return None
        return Partial(part.data, part.start, size, target.sha256, self._served)

    async def _made_file(
        self, project: str, filename: str, variant: str | None, *, head: bool, ranged: bool
    ) -> FileAnswer | None:
        """The metadata of a wheel whose page gives none, made here; None when ``filename``
        is not such a file (the ordinary path answers it)."""
        assert self._made is not None
        try:
            record = await self._pages.project(project, allow_stale=True)
        except (NotFound, RecordUnreadable, UpstreamError):
            return None  # the ordinary path says why
        entry = find_entry(record, filename, variant)
        if (
            entry is None
            or entry.filename + METADATA_SUFFIX != filename
            or not self._made.wanted(entry)
        ):
            return None
        outcome = "hit"
        stored = await self._made.stored(entry)
        if stored is None:
            outcome = "miss"
            try:
                stored = await self._made.make(entry)
            except NoMetadata as exc:
                return Refusal("not_found", f"no metadata can be read from {entry.filename}: {exc}")
            except UpstreamError as exc:
                return Refusal("upstream_failed", f"could not read {entry.filename}: {exc}")
            if stored is None:
                return Refusal(
                    "not_found", f"{filename} is not in this mirror, and the proxy is offline"
                )
        handover = self._handover(stored, head=head, ranged=ranged)
        if handover is not None:
            return handover
        fd = self._open(stored)
        if fd is None:
            return Refusal("unavailable", f"{filename} went from the cache; ask again")
        return Hit(fd, stored.sha256, outcome, self._served)

    async def _fetch_whole(self, target: Target) -> StoredFile | None:
        """A wheel fetched into the cache (to read its metadata), or None if it failed."""
        download = await self.fetch(target)
        if download.error or download.sha256 is None:
            return None
        sha = download.sha256
        return await anyio.to_thread.run_sync(self._storage.stored, sha, target.filename)

    async def fetch(self, target: Target, *, pinned: bool = False) -> Download:
        """Download ``target`` into the store (or join the download under way) and wait until it
        ended, either way: the caller reads ``error``, ``sha256`` and ``written``."""
        if self.filler is None:
            raise UpstreamError("the proxy is offline")
        download = self.filler.start(target, pinned=pinned)
        await wait_done(download)
        return download

    async def _whole(self, download: Download, source: int | None, filename: str) -> FileAnswer:
        """HEAD and Range on a miss: wait for the verified file, then answer from the very bytes
        read (a descriptor kept open), whether or not the file is still stored by then."""
        try:
            if source is None:
                source = download.open_source()
        except FillFailed as exc:
            download.release()
            return Refusal(
                "upstream_failed", f"could not fetch {filename} from the upstream: {exc}"
            )
        keep = os.dup(source)
        try:
            async for _ in read_download(download, source):
                pass
        except FillFailed as exc:
            os.close(keep)
            return Refusal(
                "upstream_failed", f"could not fetch {filename} from the upstream: {exc}"
            )
        # Just stored (or streamed whole): its access time is now, no touch needed.
        return Hit(keep, download.expected or download.sha256 or "", "miss", self._served)

    def _handover(self, stored: StoredFile, *, head: bool, ranged: bool) -> Handover | None:
        if not self._hand_over or stored.path is None:
            return None
        relative = self._storage.files_relative(stored)
        if relative is None or not os.path.isfile(stored.path):
            return None
        self._touch(stored)
        if not head and not ranged:
            self._stats.add("bytes_served", stored.size)  # the front server sends them
        return Handover(relative, stored)

    def _open(self, stored: StoredFile) -> int | None:
        if stored.path is None:
            return None
        try:
            fd = os.open(stored.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        self._touch(stored)
        return fd

    def _touch(self, stored: StoredFile) -> None:
        now = time.time()
        key = (stored.sha256, stored.filename)
        if now - self._touched.get(key, 0.0) > TOUCH_EVERY:
            if len(self._touched) > MAX_TOUCHED:
                self._touched.clear()
            self._touched[key] = now
            self._storage.touch(stored, now)

    def _served(self, n: int) -> None:
        self._stats.add("bytes_served", n)

    def _upstream_error(self, target: Target) -> None:
        origin = origin_of(target.url)
        self._stats.upstream_error(str(origin) if origin is not None else "other")

    # -- what the mirror holds (blocking: call in a worker thread) ---------------------------

    def hold(self, sha256: str) -> bool:
        """Pin a file's bytes so that eviction never takes them; True if newly pinned."""
        if self._storage.is_pinned(sha256):
            return False
        self._storage.pin(sha256)
        return True

    def release(self, sha256: str) -> None:
        """Let eviction take these bytes again."""
        self._storage.unpin(sha256)

    def is_held(self, sha256: str) -> bool:
        return self._storage.is_pinned(sha256)

    def stored_copy(
        self, sha256: str, filename: str, expected: int | None = None
    ) -> StoredFile | None:
        """The stored file, if the store holds it whole: a copy of another size than
        ``expected`` (truncated, appended to) is dropped here and None returned."""
        stored = self._storage.stored(sha256, filename)
        if stored is not None and expected is not None and stored.size != expected:
            log.warning(
                "%s is %d bytes in the store, %d expected: dropped, to fetch again",
                filename,
                stored.size,
                expected,
            )
            self._storage.remove(sha256, filename)
            return None
        return stored

    def drop(self, sha256: str, filename: str, *, damaged: bool = False) -> int:
        """Delete one stored file; the bytes freed (0 if it was gone). ``damaged``: its bytes
        were found wrong (verify), which counts as an integrity error."""
        if damaged:
            self._stats.add("integrity_errors")
        return self._storage.remove(sha256, filename)

    def hash_for_url(self, url: str) -> str | None:
        """The sha256 found when a file its page gave no hash for was downloaded."""
        return self._storage.hash_for_url(url)

    def has_page(self, project: str) -> bool:
        return self._storage.has_page(project)

    def hold_changes(self) -> None:
        """Followers of this mirror see changes only up to a completed pass from now on."""
        self._storage.changelog.hold()

    def settle_changes(self, serial: int | None) -> None:
        """A pass completed up to ``serial``: followers may see what it changed."""
        self._storage.changelog.settle(serial)

    def holds(self) -> dict[str, int]:
        """What the mirror holds: projects with a page, files and their bytes."""
        return self._storage.totals()

    async def figures(self) -> Figures:
        """Every process's counters, with this one's not yet written added, and what the
        mirror holds."""
        pending = self._stats.take()
        try:
            return await anyio.to_thread.run_sync(self._figures, pending)
        finally:
            self._stats.pending.update(pending)  # whatever the disk would not take yet

    def _figures(self, pending: Counter[str]) -> Figures:
        now = time.time()
        cache = self._storage.totals()
        counters = totals(self._storage, pending)  # first: adds this worker's pending counts
        return Figures(
            counters=counters,
            cache=cache,
            upstream_errors_by_origin=upstream_errors(self._storage),
            top_projects=[
                {"project": name, "requests": count} for name, count in top_projects(self._storage)
            ],
            last_hour=series(self._storage, now),
            uptime_seconds=round(now - self._stats.started, 1),
        )

    async def latency(self) -> list[Latency]:
        """The request latency histogram, every process's."""
        return await anyio.to_thread.run_sync(latency, self._storage)

    async def usable(self) -> bool:
        """Whether the file store can be reached (the health check)."""
        return await anyio.to_thread.run_sync(self._storage.files_usable)

    # -- the size cap ------------------------------------------------------------------------

    def after_fill(self) -> None:
        """A file was added: evict in the background if the cache went over its cap."""
        cap = self._cap
        if cap is None or self._evicting:
            return
        self._evicting = True

        async def run() -> None:
            try:
                if await anyio.to_thread.run_sync(over_cap, self._storage, cap):
                    done = await anyio.to_thread.run_sync(evict_once, self._storage, cap)
                    self._stats.add("evicted_files", done.files)
                    self._stats.add("evicted_bytes", done.bytes)
            finally:
                self._evicting = False

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Let downloads under way finish (for a while), then stop them and any eviction."""
        if self.filler is not None:
            with anyio.move_on_after(10):
                await self.filler.wait_all()
            await self.filler.cancel_all()
        await self.settle()

    async def settle(self) -> None:
        """Wait for background work (eviction) to end: for shutdown and tests."""
        while self._background:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._background))
