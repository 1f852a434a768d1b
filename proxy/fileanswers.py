"""How the mirror answers one request for a file: a stored hit (on a descriptor, from the memory
tier of hot files, handed to a front server, or redirected to the shared bucket), a download
joined or started, the size alone, a range passed through, or a typed refusal. Part of the
facade (``proxy.cache``), which owns this object and is the only one to call it; the
invariants are in its docstring.

Counting is done here, once per request: bytes served (through each answer's ``sent``),
integrity errors found on the way, upstream errors of a failed download.
"""

from __future__ import annotations

import logging
import os
import time

import anyio

from proxy.answers import (
    FileAnswer,
    Handover,
    Hit,
    InMemory,
    Partial,
    Redirect,
    Refusal,
    SizeOnly,
    Stream,
)
from proxy.errors import FillFailed, NotFound, RecordUnreadable, UpstreamError
from proxy.filestore import StoredFile
from proxy.fill import Filler, Target
from proxy.follow import Download, RemoteDownload, read_download, wait_done
from proxy.locate import METADATA_SUFFIX, find_entry, locate
from proxy.memfiles import MemoryFiles, read_verified
from proxy.metasynth import MadeMetadata
from proxy.origins import origin_of
from proxy.pageservice import PageService
from proxy.ranges import Unsatisfiable, parse_range
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.upstream import Upstream
from proxy.wheelmeta import NoMetadata

log = logging.getLogger(__name__)
TOUCH_EVERY = 600.0  # seconds between access-time updates of one file (a hot inode is not
# written on every hit; eviction needs minutes, not microseconds)
MAX_TOUCHED = 100_000
PASS_RANGE_MAX = 8 * 1024**2  # a Range on a miss up to this size is read from the upstream


class FileAnswers:
    """The file half of the mirror. ``filler`` None: offline, nothing is fetched."""

    def __init__(
        self,
        storage: Storage,
        pages: PageService,
        stats: Stats,
        upstream: Upstream | None,
        filler: Filler | None,
        *,
        hand_over: bool = False,
        made_metadata: bool = False,
        redirect_expiry: float | None = None,
        memory_files: int = 0,
        metadata_failure_ttl: float = 600.0,
    ) -> None:
        self._storage = storage
        self._pages = pages
        self._stats = stats
        self._upstream = upstream
        self.filler = filler
        self._hand_over = hand_over  # hits on this disk go to a front server (accel_redirect)
        # Hits only in the shared bucket are redirected there for this long (s3_redirect).
        self._redirect_expiry = redirect_expiry
        self._touched: dict[tuple[str, str], float] = {}
        # Hot files' verified bytes (memory_files_size); a front server sends hits itself.
        self._memory = MemoryFiles(memory_files) if memory_files > 0 and not hand_over else None
        # <wheel>.metadata for wheels the index gives none for (made from the wheel itself).
        self._made = (
            MadeMetadata(
                storage,
                upstream,
                self._fetch_whole if upstream is not None else None,
                failure_ttl=metadata_failure_ttl,
            )
            if made_metadata
            else None
        )

    async def decide(
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
        try:
            located = await locate(self._pages, self._storage, project, filename, variant)
        except NotFound as exc:
            # A wheel's metadata the page does not list is found here, not before: the
            # metadata an index gives (the usual case) costs no second page lookup.
            if self._made is not None and filename.endswith(METADATA_SUFFIX):
                made = await self._made_file(project, filename, variant, head=head, ranged=ranged)
                if made is not None:
                    return made
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
            held = await self._from_memory(stored)
            if held is not None:
                return held
            fd = self._open(stored)
            if fd is not None:  # else evicted since it was found: fetched again
                held = await self._into_memory(stored, fd)
                if held is not None:
                    return held
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
        # Never the last byte (a whole-file reader's final range waits for the verified file)
        # and never a validator (proxy.web.files): these bytes are the upstream's, unchecked,
        # as a client fetching directly would get them; it checks the file's hash (pip and uv
        # do). Large ranges are cheaper from the verified file.
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
        """A wheel fetched into the cache (to read its metadata), or None if it cannot be had
        (too big to keep, its bytes never verified). Raises UpstreamError when the upstream
        failed on the way: that is no verdict on the wheel, so it is not remembered."""
        download = await self.fetch(target)
        if download.upstream_failed:
            raise UpstreamError(download.error or f"upstream failed sending {target.filename}")
        if download.error or download.sha256 is None:
            return None
        sha = download.sha256
        return await anyio.to_thread.run_sync(self._storage.stored, sha, target.filename)

    async def fetch(
        self, target: Target, *, pinned: bool = False, batched: bool = False
    ) -> Download:
        """Download ``target`` into the store (or join the download under way) and wait until it
        ended, either way: the caller reads ``error``, ``sha256`` and ``written``."""
        if self.filler is None:
            raise UpstreamError("the proxy is offline")
        download = await self.filler.start_off_loop(target, pinned=pinned, batched=batched)
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

    async def _from_memory(self, stored: StoredFile) -> InMemory | None:
        """A hit from the memory tier, if it holds this very file (``stored`` was just
        stat'ed: a file replaced or evicted since it was read is not served from memory)."""
        if self._memory is None:
            return None
        held = self._memory.get(stored)
        if held is None:
            return None
        self._touch(stored)
        return InMemory(held.data, stored.sha256, held.mtime, self._served)

    async def _into_memory(self, stored: StoredFile, fd: int) -> InMemory | None:
        """On a hot file's second hit, its bytes read from ``fd`` (the one just opened, so
        they are this file's) into the memory tier once they hash right; ``fd`` is closed
        then. None: served from ``fd`` as usual."""
        if self._memory is None or not self._memory.wants(stored):
            return None
        data = None
        try:
            data = await anyio.to_thread.run_sync(read_verified, fd, stored)
        except OSError as exc:
            log.info("%s not taken into memory: %s", stored.filename, exc)
        finally:
            held = self._memory.keep(stored, data)
        if held is None:
            if data is None:
                log.warning(
                    "%s: the stored copy does not verify; not held in memory", stored.filename
                )
            return None
        os.close(fd)
        return InMemory(held.data, stored.sha256, held.mtime, self._served)

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
