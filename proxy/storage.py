"""The cache directory: page records in diskcache, package files as plain content-addressed files.

    <cache>/index/   diskcache: page records, the root listing, negative entries, counters
    <cache>/files/   ab/<sha256>/<filename>: a path proves its content; a static server could
                     serve this tree as it is
    <cache>/tmp/     partial downloads and their locks, renamed into files/ only when verified
    <cache>/state/   prefetch state, the held list (held.sqlite) and other bookkeeping
    <cache>/uploads/ with an S3 ``storage``: files stored here and not yet in the bucket

With ``storage: s3://bucket/prefix`` (``Storage.from_settings``), files live in the bucket
behind a local tier (``proxy/tiered.py``), and page records and pins (the published copy of
the held list, ``proxy/heldfiles.py``), JSON API records and the root listing are written to
the bucket too (``proxy/sharedrecords.py``, ``proxy/shareddocs.py``), so replicas over one
bucket serve one mirror; the index, the counters, the held list and tmp/ stay per replica.

diskcache is synchronous; async callers run these methods in a worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import diskcache

from proxy.changelog import Changelog
from proxy.errors import CacheUnusable
from proxy.filestore import FileStore, StoredFile
from proxy.heldfiles import HeldFiles
from proxy.heldmigration import migrate
from proxy.localstore import LocalFileStore
from proxy.locks import lock_held
from proxy.models import PageRecord, ProjectListing, ProjectPage, RootRecord
from proxy.records import usable_page, usable_root

if TYPE_CHECKING:
    from proxy.jsonapi import JsonRecord
    from proxy.lease import LeaseKeeper
    from proxy.settings import Settings
    from proxy.shareddocs import SharedDocs
    from proxy.sharedrecords import SharedRecords

log = logging.getLogger(__name__)

_PAGE = "page:"
_MISSING = "missing:"
_URLHASH = "urlhash:"
_SIZE = "size:"
_MADE_METADATA = "mademeta:"
MAX_REMEMBERED_SIZES = 100_000
CHANGES_SLACK = 120.0  # seconds of change markers read again: writers' clocks differ, lists lag
_JSON = "json:"  # the legacy JSON API: json:<project> and json:<project>/<version>
_SHARED = "shared:"  # per project: the version of the bucket's record our copy matches
_GEN = "gen:"  # per project: bumped by every change to its page or to the files it lists
_UNREADABLE = object()
FILES_GEN = "gen-files"  # bumped when stored files go (verify, eviction) whatever they belong to
ROOT_KEY = "root"
FILES_COUNT = "count:files"
FILES_BYTES = "count:bytes"
PROJECTS_COUNT = "count:projects"


def unusable(root: Path, exc: OSError | sqlite3.Error) -> CacheUnusable:
    """One line for an operator: which directory, what failed, which setting to change."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        reason += f" ({exc.filename})" if exc.filename else ""
    else:
        reason = f"its index database: {exc}"
    return CacheUnusable(
        f"cannot use the cache directory {root}: {reason}; set cache_dir "
        "(PYPI_PROXY_CACHE_DIR, --cache-dir) to a directory this user can write"
    )


def check_cache_dir(root: Path) -> None:
    """Make the cache directory if needed and prove it writable, before a server starts."""
    storage = Storage(root)
    try:
        storage.check_writable()
    finally:
        storage.close()


def check_storage(settings: Settings) -> None:
    """``check_cache_dir`` for the storage ``settings`` name: with a bucket, also that it
    answers. SettingsError (one line for an operator) when either is unusable."""
    from proxy.storefactory import check_bucket

    storage = Storage.from_settings(settings)
    try:
        storage.check_writable()
        try:
            check_bucket(storage)
        except OSError as exc:  # StoreUnavailable: names the bucket and status, no secret
            raise CacheUnusable(
                f"cannot use the storage {settings.storage}: {exc}; check storage, "
                "s3_endpoint and the credentials (AWS_ACCESS_KEY_ID, ...)"
            ) from None
    finally:
        storage.close()


class Storage:
    def __init__(
        self, root: Path, files: FileStore | None = None, shared: SharedRecords | None = None
    ) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.files: FileStore = files if files is not None else LocalFileStore(self.files_dir)
        self.shared = shared  # set when replicas share pages and pins through a bucket
        # Following the pages other replicas store (sync_pages): where the change markers
        # are read from next (None: not yet read at all), and those read in that window.
        self._changes_from: float | None = None
        self._changes_read: dict[str, float] = {}
        self._changes_swept = 0.0
        self.tmp_dir = root / "tmp"
        self.state_dir = root / "state"
        self._sizes: dict[str, int] = {}
        self.unreadable: set[str] = set()  # projects whose stored record could not be used
        self._changelog: Changelog | None = None
        self._held: HeldFiles | None = None
        self._docs: SharedDocs | None = None
        self._root_shared: ProjectListing | None = None
        self._held_lock = threading.Lock()
        self._changelog_lock = threading.Lock()
        try:
            for directory in (self.files_dir, self.tmp_dir, self.state_dir):
                directory.mkdir(parents=True, exist_ok=True)
            # Pages must never be culled by diskcache's own size limit: eviction is ours to
            # decide. diskcache opens one SQLite connection per thread, each with its own page
            # cache and memory map: keep those small so memory stays bounded however many
            # threads run.
            self.index = diskcache.Cache(
                str(root / "index"),
                size_limit=2**62,
                eviction_policy="none",
                timeout=60,
                sqlite_cache_size=512,
                sqlite_mmap_size=2**24,
            )
        except (OSError, sqlite3.Error) as exc:
            raise unusable(root, exc) from None

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
        try:
            with tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="probe-", suffix=".probe"):
                pass
        except OSError as exc:
            raise unusable(self.root, exc) from None

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

    # -- pages -------------------------------------------------------------------------------

    def _read_record(self, key: str) -> object | None:
        try:
            value: object = self.index.get(key)
        except Exception:  # unpickling a record of another layout can raise nearly anything
            return _UNREADABLE
        return value

    def load_page(self, project: str) -> PageRecord | None:
        """The stored record, or None; a record this version cannot use is None too, and the
        project is remembered in ``unreadable`` (offline answers say so)."""
        raw = self._read_record(_PAGE + project)
        record = usable_page(raw) if raw is not None else None
        if raw is None:
            return self._import_page(project) if self.shared is not None else None
        if record is None:
            if project not in self.unreadable:
                log.warning("the stored page of %s is unreadable (an older format?)", project)
            self.unreadable.add(project)
        else:
            self.unreadable.discard(project)
        return record

    def save_page(self, record: PageRecord) -> int:
        """Store a page record; returns the project's new generation. With a bucket, the
        record goes there too, for the other replicas."""
        generation = self._save_page_here(record)
        if self.shared is not None:
            version = self.shared.save_page(record)
            if version is not None:
                self.index.set(_SHARED + record.project, version)
        return generation

    def _save_page_here(self, record: PageRecord) -> int:
        key = _PAGE + record.project
        with self.index.transact():  # the record and its generation change together
            if self.index.add(key, record):
                self.index.incr(PROJECTS_COUNT)
            else:
                self.index.set(key, record)
            self.index.delete(_MISSING + record.project)
            generation = int(self.index.incr(_GEN + record.project))
        self.changelog.page_saved(record.project, record.page)  # what followers read (tiers)
        return generation

    def has_page(self, project: str) -> bool:
        return _PAGE + project in self.index

    def delete_page(self, project: str) -> None:
        """Drop a project's record; with a bucket, every replica's (they follow the change)."""
        self._delete_page_here(project)
        if self.shared is not None:
            self.shared.delete_page(project)

    def _delete_page_here(self, project: str) -> None:
        with self.index.transact():
            if self.index.delete(_PAGE + project):
                self.index.decr(PROJECTS_COUNT)
            self.index.incr(_GEN + project)
            self.index.delete(_SHARED + project)
        self.changelog.project_removed(project)

    # -- pages another replica stored ---------------------------------------------------------

    def _import_page(self, project: str) -> PageRecord | None:
        """The bucket's record of a project this replica has none of, stored here too."""
        assert self.shared is not None
        try:
            got = self.shared.load_page(project)
        except OSError as exc:  # the bucket is down: as if no replica had stored it
            log.warning("could not read the shared page of %s: %s", project, exc)
            return None
        if got is None:
            return None
        record, version = got
        self._save_page_here(record)
        self.index.set(_SHARED + project, version)
        return record

    def _take_page(self, project: str) -> int:
        """Keep the bucket's record of ``project`` unless ours is the same or newer; 1 if
        taken."""
        assert self.shared is not None
        got = self.shared.load_page(project)
        if got is None:
            if _SHARED + project in self.index:
                # Shared once, removed since by another replica (its prefetcher found the
                # project gone): this replica drops it too.
                self._delete_page_here(project)
                return 1
            return 0
        record, version = got
        if self.index.get(_SHARED + project) == version:
            return 0  # ours, or read before
        mine = usable_page(self._read_record(_PAGE + project))
        if mine is not None and _newer(mine, record):
            self.index.set(_SHARED + project, version)
            return 0  # a lagging writer: ours is newer, keep it
        self._save_page_here(record)
        self.index.set(_SHARED + project, version)
        return 1

    def sync_pages(self) -> int:
        """Read the page records other replicas wrote since the last call (all of them the
        first time) and keep the newer ones here; how many were taken. Blocking: a server
        runs it every few seconds in a thread (``Runtime``)."""
        shared = self.shared
        if shared is None:
            return 0
        taken = 0
        if self._changes_from is None:
            # First call: every record (a listing of pages/, its versions compared here),
            # then only the change markers written since (a listing that many keys long).
            started = shared.clock()
            for item in list(shared.pages()):
                if self.index.get(_SHARED + item.project) != item.version:
                    taken += self._take_page(item.project)
            self._changes_from = started - CHANGES_SLACK
        else:
            started = shared.clock()
            for key, project in list(shared.changes(self._changes_from)):
                if key not in self._changes_read:
                    self._changes_read[key] = started
                    taken += self._take_page(project)
            self._changes_from = started - CHANGES_SLACK
            for key, when in list(self._changes_read.items()):
                if when < self._changes_from - CHANGES_SLACK:
                    del self._changes_read[key]  # out of the window read again
            if started - self._changes_swept > 3600:
                self._changes_swept = started
                shared.sweep_changes()
        if taken:
            log.info("took %d page records other replicas stored", taken)
        return taken

    @property
    def changelog(self) -> Changelog:
        """The changes applied to what this cache holds, for followers (opened on first use)."""
        with self._changelog_lock:  # first use may come from several threads at once
            if self._changelog is None:
                changelog = Changelog(self.state_path("changelog.sqlite"))
                if changelog.is_empty() and self.totals()["projects"]:
                    count = changelog.rebuild(self._stored_pages())
                    log.info("changelog started again from %d stored pages", count)
                self._changelog = changelog
            return self._changelog

    def _stored_pages(self) -> Iterator[ProjectPage]:
        for name in self.iter_page_names():
            record = self.load_page(name)
            if record is not None:
                yield dataclasses.replace(record.page, name=name)

    def load_page_at(self, project: str) -> tuple[int, PageRecord | None]:
        """The project's generation and its record, the generation read first: a change made
        in between shows as a newer generation later, never as a missed one."""
        return self.generation(project), self.load_page(project)

    # Generations let every process (workers, prefetch, verify, admin actions) see what another
    # changed: a reader keeps a copy in memory and compares one small counter now and then.

    def generation(self, project: str) -> int:
        return int(self.index.get(_GEN + project, 0))

    def mark_changed(self, project: str) -> None:
        """The files a project lists changed on disk (added or removed) without a new page."""
        self.index.incr(_GEN + project)

    def files_generation(self) -> int:
        return int(self.index.get(FILES_GEN, 0))

    def mark_files_changed(self) -> None:
        """Stored files went away (verify, eviction): offline views must be built again."""
        self.index.incr(FILES_GEN)

    def page_projects(self) -> list[str]:
        return [k[len(_PAGE) :] for k in self.index.iterkeys() if str(k).startswith(_PAGE)]

    def page_names(self, after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` projects with a stored page, in name order, after ``after``: one
        range read of the index's key column, so paging through 100,000 costs what one page
        shows. (diskcache has no range query of its own; string keys are stored as they are.)"""
        rows = self.index._sql(
            "SELECT key FROM Cache WHERE key > ? AND key < ? ORDER BY key LIMIT ?",
            (_PAGE + after, _PAGE[:-1] + chr(ord(_PAGE[-1]) + 1), limit),
        ).fetchall()
        return [str(key)[len(_PAGE) :] for (key,) in rows]

    def iter_page_names(self, batch: int = 1000) -> Iterator[str]:
        """Every project with a stored page, in name order, read ``batch`` at a time."""
        after = ""
        while names := self.page_names(after, batch):
            yield from names
            after = names[-1]

    def load_root(self) -> RootRecord | None:
        """The stored root listing; with a bucket and none here, the one another replica
        stored there (kept here too)."""
        raw = self._read_record(ROOT_KEY)
        if raw is None and self.docs is not None:
            record = self.docs.load_root()
            if record is not None:
                self.index.set(ROOT_KEY, record)
            return record
        return usable_root(raw) if raw is not None else None

    def save_root(self, record: RootRecord) -> None:
        self.index.set(ROOT_KEY, record)
        # A revalidation (304) saves the same listing again: the bucket's copy is not written
        # again for it (its fetched_at lags; a replica taking it revalidates, cheaply).
        if self.docs is not None and record.listing is not self._root_shared:
            self.docs.save_root(record)
            self._root_shared = record.listing

    @property
    def docs(self) -> SharedDocs | None:
        """The JSON API records and root listing in the bucket (None: no bucket)."""
        if self.shared is None:
            return None
        if self._docs is None:
            from proxy.shareddocs import SharedDocs  # keeps obstore off the local-only path

            self._docs = SharedDocs(self.shared)
        return self._docs

    def mark_missing(self, project: str, ttl: float) -> None:
        if ttl > 0:
            self.index.set(_MISSING + project, True, expire=ttl)

    def is_missing(self, project: str) -> bool:
        return bool(self.index.get(_MISSING + project, False))

    # -- the legacy JSON API -----------------------------------------------------------------

    def load_json(self, key: str) -> object | None:
        """A stored JSON API record (``project`` or ``project/version``); the caller checks
        its type and format. With a bucket and none here, another replica's (kept here)."""
        record: object = self.index.get(_JSON + key)
        if record is None and self.docs is not None:
            record = self.docs.load_json(key)
            if record is not None:
                self.index.set(_JSON + key, record)
        return record

    def save_json(self, key: str, record: JsonRecord) -> None:
        self.index.set(_JSON + key, record)
        if self.docs is not None:
            self.docs.save_json(key, record)

    def delete_json(self, project: str) -> int:
        """Drop a project's JSON API records, its versions' too (with a bucket, there too);
        how many went here."""
        rows = self.index._sql(
            "SELECT key FROM Cache WHERE key = ? OR (key > ? AND key < ?)",
            (_JSON + project, _JSON + project + "/", _JSON + project + "0"),
        ).fetchall()
        if self.docs is not None:
            self.docs.delete_json(project)
        return sum(1 for (key,) in rows if self.index.delete(key))

    # -- files -------------------------------------------------------------------------------
    # Only this class and the file store know where a file lives; everyone else holds a
    # StoredFile (its sha256, size, times) or asks by (sha256, filename).

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
        return self.tmp_dir / f"{key}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"

    def lock_path(self, key: str) -> Path:
        """The lock electing one downloader of ``key`` across processes."""
        return self.tmp_dir / f"{key}.lock"

    def state_path(self, name: str) -> Path:
        """A bookkeeping file (locks, the prefetcher's database) of this cache directory."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"not a state file name: {name!r}")
        return self.state_dir / name

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
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.name.endswith(".lock"):
                if not lock_held(Path(entry.path)):
                    # Safe even if someone is just taking it: take_lock re-checks the inode.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                continue
            if entry.name.endswith(".ok"):
                # A verified download kept briefly for followers (see proxy/follow.py).
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.stat().st_mtime > 120:
                        os.unlink(entry.path)
                continue
            if not entry.name.endswith(".part"):
                continue
            lock_path = self.tmp_dir / (entry.name.split(".", 1)[0] + ".lock")
            if lock_held(lock_path):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed


def _newer(mine: PageRecord, theirs: PageRecord) -> bool:
    """Whether our record is strictly newer than another replica's: by serial when both
    have one, else by when each was fetched."""
    a, b = mine.page.serial, theirs.page.serial
    if a is not None and b is not None and a != b:
        return a > b
    return mine.fetched_at > theirs.fetched_at
