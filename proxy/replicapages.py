"""Following the page records other replicas store in a shared bucket: a record this replica
has none of is read on first need (``import_page``), and every few seconds the records written
since are read and the newer ones kept (``sync``). Part of ``Storage`` (which makes one when
its storage is shared, and owns where records live); only it calls this.

The bucket's change markers are read again for ``CHANGES_SLACK`` seconds, since writers'
clocks differ and listings lag: a marker read once in that window is not taken twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.models import PageRecord

if TYPE_CHECKING:
    from proxy.pagerecords import PageRecords
    from proxy.sharedrecords import SharedRecords

log = logging.getLogger(__name__)

CHANGES_SLACK = 120.0  # seconds of change markers read again: writers' clocks differ, lists lag


class ReplicaPages:
    def __init__(self, storage: PageRecords, shared: SharedRecords) -> None:
        self._storage = storage
        self._shared = shared
        # Where the change markers are read from next (None: not yet read at all), and those
        # read in that window.
        self._changes_from: float | None = None
        self._changes_read: dict[str, float] = {}
        self._changes_swept = 0.0

    def import_page(self, project: str) -> PageRecord | None:
        """The bucket's record of a project this replica has none of, stored here too."""
        try:
            got = self._shared.load_page(project)
        except OSError as exc:  # the bucket is down: as if no replica had stored it
            log.warning("could not read the shared page of %s: %s", project, exc)
            return None
        if got is None:
            return None
        record, version = got
        self._storage.save_page_here(record)
        self._storage.set_shared_version(project, version)
        return record

    def _take_page(self, project: str) -> int:
        """Keep the bucket's record of ``project`` unless ours is the same or newer; 1 if
        taken."""
        got = self._shared.load_page(project)
        if got is None:
            if self._storage.shared_version(project) is not None:
                # Shared once, removed since by another replica (its prefetcher found the
                # project gone): this replica drops it too.
                self._storage.delete_page_here(project)
                return 1
            return 0
        record, version = got
        if self._storage.shared_version(project) == version:
            return 0  # ours, or read before
        mine = self._storage.page_here(project)
        if mine is not None and _newer(mine, record):
            self._storage.set_shared_version(project, version)
            return 0  # a lagging writer: ours is newer, keep it
        self._storage.save_page_here(record)
        self._storage.set_shared_version(project, version)
        return 1

    def sync(self) -> int:
        """Read the page records other replicas wrote since the last call (all of them the
        first time) and keep the newer ones here; how many were taken. Blocking: a server
        runs it every few seconds in a thread (``Runtime``)."""
        shared = self._shared
        taken = 0
        if self._changes_from is None:
            # First call: every record (a listing of pages/, its versions compared here),
            # then only the change markers written since (a listing that many keys long).
            started = shared.clock()
            for item in list(shared.pages()):
                if self._storage.shared_version(item.project) != item.version:
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


def _newer(mine: PageRecord, theirs: PageRecord) -> bool:
    """Whether our record is strictly newer than another replica's: by serial when both
    have one, else by when each was fetched."""
    a, b = mine.page.serial, theirs.page.serial
    if a is not None and b is not None and a != b:
        return a > b
    return mine.fetched_at > theirs.fetched_at
