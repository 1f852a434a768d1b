"""What the mirror holds: the held list (and its published copy, a bucket's pins), which
stored copies are whole, the catalog of projects the query API lists, and the reads ``verify``
makes. Part of the facade
(``proxy.cache``), which owns this object and hands its methods on (documented there); callers
never see ``Storage``.

Every method blocks (diskcache reads, stat calls, hashing): call them in a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from proxy.catalog import (
    SORTED_MAX_AGE,
    FileFacts,
    ProjectFacts,
    SortedViews,
    SortKey,
    list_by_name,
    list_sorted,
    project_facts,
    project_files,
)
from proxy.filestore import StoredFile
from proxy.heldfiles import HeldFile
from proxy.locate import sha256_of
from proxy.models import PageRecord
from proxy.stats import Stats
from proxy.storage import Storage

log = logging.getLogger(__name__)


class Holdings:
    def __init__(self, storage: Storage, stats: Stats) -> None:
        self._storage = storage
        self._stats = stats
        # One per process: an order other than by name is read once per SORTED_MAX_AGE.
        self._views = SortedViews(storage, SORTED_MAX_AGE)

    # -- the held list ----------------------------------------------------------------------
    # The bucket's pins/<sha256> markers are the copy other replicas' eviction reads: written
    # before a row here (a row only here would not stop them), deleted only for what a
    # release let go of here (another replica may hold what this list lacks).

    def hold(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        files = list(files)
        held, shared = self._storage.held, self._storage.shared
        if shared is not None:
            for sha in {f.sha256 for f in files}:
                if not held.is_held(sha):
                    shared.pin(sha)
        return held.hold(project, files)

    def release(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        gone = self._storage.held.release(project, files)
        shared = self._storage.shared
        if shared is not None:
            for sha in gone:
                shared.unpin(sha)
        return gone

    def held_files(self, project: str) -> list[HeldFile]:
        return self._storage.held.held_files(project)

    def iter_held(self) -> Iterator[tuple[str, HeldFile]]:
        return self._storage.held.iter_held()

    def is_held(self, sha256: str, filename: str | None = None) -> bool:
        if filename is not None:
            return self._storage.held.is_held(sha256, filename)
        return self._storage.is_held(sha256)

    def held_figures(self) -> dict[str, int]:
        return self._storage.held.figures()

    def publish(self, *, write: bool = True) -> int:
        shared = self._storage.shared
        if shared is None:
            return 0
        missing = [sha for sha in self._storage.held.iter_shas() if not shared.is_pinned(sha)]
        if write:
            for sha in missing:
                shared.pin(sha)
            if missing:
                log.info("wrote %d bucket pins missing for held files", len(missing))
        return len(missing)

    # -- stored files ------------------------------------------------------------------------

    def stored_copy(
        self, sha256: str, filename: str, expected: int | None = None
    ) -> StoredFile | None:
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
        if damaged:
            self._stats.add("integrity_errors")
        return self._storage.remove(sha256, filename)

    def recheck(self, sha256: str, filename: str) -> bool:
        """Hash a stored copy again and drop it if its bytes are wrong; True when dropped."""
        stored = self._storage.stored(sha256, filename)
        if stored is None or sha256_of(self._storage, stored) == sha256:
            return False
        self.drop(sha256, filename, damaged=True)
        return True

    def hash_of(self, stored: StoredFile) -> str | None:
        return sha256_of(self._storage, stored)

    def check_copies(self, stored: StoredFile) -> int:
        mended = self._storage.check_copies(stored)
        if mended:
            self._stats.add("integrity_errors", mended)
        return mended

    def hash_for_url(self, url: str) -> str | None:
        return self._storage.hash_for_url(url)

    def sweep_partials(self) -> int:
        return self._storage.sweep_tmp()

    def recount(self) -> None:
        self._storage.recount()

    # -- pages and projects ------------------------------------------------------------------

    def has_page(self, project: str) -> bool:
        return self._storage.has_page(project)

    def page_records(self) -> Iterator[tuple[str, PageRecord | None]]:
        storage = self._storage
        for project in storage.page_projects():
            record = storage.load_page(project)
            if record is not None or project in storage.unreadable:
                yield project, record  # else dropped since it was listed: nothing to say

    def stored_totals(self) -> dict[str, int]:
        return self._storage.totals()

    def list_projects(
        self, key: SortKey, *, after: str | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[ProjectFacts], float]:
        as_of = time.time()  # rows read now; other orders than by name say when they were read
        if after is not None:
            return list_by_name(self._storage, after, limit), as_of
        if key == "name":
            return list_sorted(self._storage, key, offset, limit), as_of
        return self._views.rows(key, offset, limit)

    def project_facts(self, record: PageRecord) -> ProjectFacts:
        return project_facts(self._storage, record)

    def project_files(self, record: PageRecord) -> list[FileFacts]:
        return project_files(self._storage, record)
