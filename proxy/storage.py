"""The cache directory: page records in diskcache, package files as plain content-addressed files.

    <cache>/index/   diskcache: page records, the root listing, negative entries, counters
    <cache>/files/   ab/<sha256>/<filename>: a path proves its content; a static server could
                     serve this tree as it is
    <cache>/tmp/     partial downloads and their locks, renamed into files/ only when verified
    <cache>/state/   prefetch state, the held list (held.sqlite) and other bookkeeping
    <cache>/uploads/ with an S3 ``storage``: files stored here and not yet in the bucket

``Storage`` owns every path above and is made of: the page records of the index (its base
class, ``proxy/pagerecords.py``), the file store (``proxy/filestore.py``), and the working
files of tmp/ and state/ (``proxy/workfiles.py``); what lies here is the files' side of the
index (sizes, hashes found, counters), the held list, and the calls that span the parts.

With ``storage: s3://bucket/prefix`` (``Storage.from_settings``), files live in the bucket
behind a local tier (``proxy/tiered.py``), and page records and pins (the published copy of
the held list, ``proxy/heldfiles.py``), JSON API records and the root listing are written to
the bucket too (``proxy/sharedrecords.py``, followed by ``proxy/replicapages.py``;
``proxy/shareddocs.py``), so replicas over one bucket serve one mirror; the index, the
counters, the held list and tmp/ stay per replica.

diskcache is synchronous; async callers run these methods in a worker thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import diskcache

from proxy.filestore import FileStore, StoredFile
from proxy.heldfiles import HeldFiles
from proxy.heldmigration import migrate
from proxy.localstore import LocalFileStore
from proxy.pagerecords import PROJECTS_COUNT, PageRecords
from proxy.workfiles import WorkFiles, unusable

if TYPE_CHECKING:
    from proxy.lease import LeaseKeeper
    from proxy.settings import Settings
    from proxy.sharedrecords import SharedRecords

log = logging.getLogger(__name__)

_URLHASH = "urlhash:"
_SIZE = "size:"
_MADE_METADATA = "mademeta:"
MAX_REMEMBERED_SIZES = 100_000
FILES_GEN = "gen-files"  # bumped when stored files go (verify, eviction) whatever they belong to
FILES_COUNT = "count:files"
FILES_BYTES = "count:bytes"


class Storage(PageRecords):
    def __init__(
        self, root: Path, files: FileStore | None = None, shared: SharedRecords | None = None
    ) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.files: FileStore = files if files is not None else LocalFileStore(self.files_dir)
        self._sizes: dict[str, int] = {}
        self._held: HeldFiles | None = None
        self._held_lock = threading.Lock()
        try:
            self.files_dir.mkdir(parents=True, exist_ok=True)
            self.work = WorkFiles(root)  # tmp/ and state/
            self.tmp_dir, self.state_dir = self.work.tmp_dir, self.work.state_dir
            # Pages must never be culled by diskcache's own size limit: eviction is ours to
            # decide. diskcache opens one SQLite connection per thread, each with its own page
            # cache and memory map: keep those small so memory stays bounded however many
            # threads run.
            index = diskcache.Cache(
                str(root / "index"),
                size_limit=2**62,
                eviction_policy="none",
                timeout=60,
                sqlite_cache_size=512,
                sqlite_mmap_size=2**24,
            )
        except (OSError, sqlite3.Error) as exc:
            raise unusable(root, exc) from None
        super().__init__(index, shared, self.work.state_path("changelog.sqlite"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        """The storage ``settings`` describe: the cache directory, or a bucket behind it."""
        from proxy.storefactory import open_storage  # keeps obstore off the local-only path

        return open_storage(cls, settings)

    def start_background(self) -> None:
        """A server's: the uploader of a tiered store (one-shot commands leave it queued)."""
        start = getattr(self.files, "start", None)
        if callable(start):
            start()

    def lease(self, name: str) -> LeaseKeeper:
        """A lease every replica sharing this storage sees (the prefetcher's, one at a time):
        in the bucket when there is one, else in state/ (the processes of this machine)."""
        from proxy.lease import local_lease, s3_lease

        bucket = getattr(self.files, "bucket", None)
        if self.shared is not None and bucket is not None:
            return s3_lease(bucket, name)
        # A directory of their own: state/<name>.lock files are other locks (the prefetch pass's)
        return local_lease(self.state_dir / "leases", name)

    def check_writable(self) -> None:
        """Write and remove a file in tmp/, as every download does; CacheUnusable if it fails."""
        self.work.check_writable()

    def flush(self, timeout: float) -> bool:
        """Send what waits for upload to the bucket, for up to ``timeout`` seconds (a command
        ending, a server stopping); False when some is left (it stays queued, durably)."""
        from proxy.tiered import TieredFileStore, wait_uploaded

        if isinstance(self.files, TieredFileStore):
            return wait_uploaded(self.files, timeout)
        return True

    def close(self) -> None:
        close_files = getattr(self.files, "close", None)
        if callable(close_files):
            close_files()
        if self._changelog is not None:
            self._changelog.close()
        if self._held is not None:
            self._held.close()
        self.index.close()

    # -- files -------------------------------------------------------------------------------
    # Only this class and the file store know where a file lives; everyone else holds a
    # StoredFile (its sha256, size, times) or asks by (sha256, filename).

    def files_generation(self) -> int:
        return int(self.index.get(FILES_GEN, 0))

    def mark_files_changed(self) -> None:
        """Stored files went away (verify, eviction): offline views must be built again."""
        self.index.incr(FILES_GEN)

    def stored(self, sha256: str, filename: str) -> StoredFile | None:
        """The stored file, or None when the cache does not hold it (or the name or hash is
        not storable: never a path outside the tree)."""
        return self.files.stat(sha256, filename)

    def hash_for_url(self, url: str) -> str | None:
        """The sha256 found when a file the index gave no hash for was downloaded."""
        value = self.index.get(_URLHASH + url)
        return value if isinstance(value, str) else None

    def remember_hash(self, url: str, sha256: str) -> None:
        self.index.set(_URLHASH + url, sha256)

    def made_metadata(self, wheel: str) -> str | None:
        """The sha256 of the metadata this proxy read out of a wheel (``wheel``: its sha256,
        or its URL when the page gives no hash), once made."""
        value = self.index.get(_MADE_METADATA + wheel)
        return value if isinstance(value, str) else None

    def remember_made_metadata(self, wheel: str, sha256: str) -> None:
        self.index.set(_MADE_METADATA + wheel, sha256)

    def recorded_size(self, sha256: str) -> int | None:
        """The size a stored file had when it was verified (for pages that give no size), so
        a file truncated on disk later is never served. Remembered in memory once read."""
        size = self._sizes.get(sha256)
        if size is None:
            value = self.index.get(_SIZE + sha256)
            if not isinstance(value, int):
                return None
            if len(self._sizes) >= MAX_REMEMBERED_SIZES:
                self._sizes.clear()
            self._sizes[sha256] = size = value
        return size

    def known_size(self, sha256: str) -> int | None:
        """``recorded_size`` from memory only: never blocks."""
        return self._sizes.get(sha256)

    def commit(self, part: Path, sha256: str, filename: str) -> StoredFile:
        """Move a verified download into the store atomically; the counters follow."""
        size = part.stat().st_size
        self.index.set(_SIZE + sha256, size)  # before the file appears: never a file unrecorded
        stored, created = self.files.put(part, sha256, filename)
        if created:
            self.index.incr(FILES_COUNT)
            self.index.incr(FILES_BYTES, size)
        self.index.incr(FILES_GEN)  # offline views that left it out are built again
        return stored

    def remove(self, sha256: str, filename: str) -> int:
        """Delete one stored file; the bytes freed (0 if it was already gone)."""
        size = self.files.remove(sha256, filename)
        if size:
            self.index.decr(FILES_COUNT)
            self.index.decr(FILES_BYTES, size)
        self.index.incr(FILES_GEN)  # offline views listing it are built again, in every worker
        return size

    def read(self, stored: StoredFile) -> Iterator[bytes]:
        return self.files.read(stored)

    def local_copy(self, stored: StoredFile) -> StoredFile | None:
        """``stored`` as a file on this machine (``path`` set), copied in from a shared store
        and verified on the way; None when it went or its bytes were damaged (then dropped).
        Blocking: the bytes are read whole before anything is sent."""
        if stored.path is not None:
            return stored
        copy = getattr(self.files, "local_copy", None)
        if not callable(copy):
            return None
        try:
            found: StoredFile | None = copy(stored)
        except OSError as exc:  # the bucket went away mid-copy: as if not stored
            log.warning("could not copy %s from the bucket: %s", stored.filename, exc)
            return None
        return found

    def check_copies(self, stored: StoredFile) -> int:
        """``stored`` was found whole: hash the other copies of it (a bucket's object behind
        a local copy); each damaged one is deleted and made again from ``stored``. How many
        were (blocking: the bytes are read whole)."""
        check = getattr(self.files, "check_copies", None)
        return int(check(stored)) if callable(check) else 0

    def stream_in(self, stored: StoredFile) -> AsyncIterator[bytes] | None:
        """``stored``'s bytes sent from a shared store while a local copy is made (see
        ``TieredFileStore.stream_in``: a damaged object is never sent whole); None when
        ``stored`` is local or the store cannot."""
        stream = getattr(self.files, "stream_in", None)
        if stored.path is not None or not callable(stream):
            return None
        chunks: AsyncIterator[bytes] = stream(stored)
        return chunks

    def presign(self, stored: StoredFile, expires: float) -> str | None:
        """A URL the client can fetch ``stored`` from itself, for ``expires`` seconds; None
        when the store has none (a local directory, a file not yet uploaded)."""
        try:
            return self.files.presign(stored, expires)
        except OSError as exc:  # StoreUnavailable: the hit is served another way
            log.warning("no presigned URL for %s: %s", stored.filename, exc)
            return None

    def touch(self, stored: StoredFile, now: float | None = None) -> None:
        """Record an access for least-recently-used eviction."""
        self.files.touch(stored, now if now is not None else time.time())

    def iter_stored(self) -> Iterator[StoredFile]:
        return self.files.iter_files()

    def files_relative(self, stored: StoredFile) -> str | None:
        """Where a stored file lies under the files directory (what a front server's alias
        of that directory serves, for ``accel_redirect``), or None when it is not on this
        disk."""
        if stored.path is None:
            return None
        try:
            return stored.path.relative_to(self.files_dir).as_posix()
        except ValueError:
            return None

    # -- working files: downloads in progress and bookkeeping --------------------------------

    def part_path(self, key: str, suffix: str) -> Path:
        """A new temporary file of a download (``key`` is a Target's key: never a page's raw
        value), unique to this process and call."""
        return self.work.part_path(key, suffix)

    def lock_path(self, key: str) -> Path:
        """The lock electing one downloader of ``key`` across processes."""
        return self.work.lock_path(key)

    def state_path(self, name: str) -> Path:
        """A bookkeeping file (locks, the prefetcher's database) of this cache directory."""
        return self.work.state_path(name)

    def files_usable(self) -> bool:
        """Whether the file store can be reached (the health check)."""
        return self.files_dir.is_dir()

    @property
    def held(self) -> HeldFiles:
        """The held list (``proxy/heldfiles.py``), opened on first use; a cache directory of
        the previous version has its pins and the prefetcher's held table moved in then."""
        with self._held_lock:
            if self._held is None:
                held = HeldFiles(self.state_path("held.sqlite"))
                migrate(held, self.index, self.state_path("prefetch.sqlite"), self.iter_stored)
                self._held = held
            return self._held

    def is_held(self, sha256: str) -> bool:
        """Held here, or (with a bucket) pinned by any replica: what eviction never takes."""
        if self.held.is_held(sha256):
            return True
        return self.shared is not None and self.shared.is_pinned(sha256)

    # -- bookkeeping -------------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        return {
            "projects": int(self.index.get(PROJECTS_COUNT, 0)),
            "files": int(self.index.get(FILES_COUNT, 0)),
            "bytes": int(self.index.get(FILES_BYTES, 0)),
        }

    def recount(self) -> None:
        """Rebuild the file counters from disk (first start, or after an unclean stop)."""
        count = size = 0
        for stored in self.iter_stored():
            count += 1
            size += stored.size
        with self.index.transact():
            self.index.set(FILES_COUNT, count)
            self.index.set(FILES_BYTES, size)
            self.index.set(PROJECTS_COUNT, len(self.page_projects()))

    def sweep_tmp(self) -> int:
        """Remove partial downloads nobody is writing (left by a crash), and lock files nobody
        holds; returns how many partial downloads went."""
        return self.work.sweep_tmp()
