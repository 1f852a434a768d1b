"""The page side of the cache's index (diskcache, ``<cache>/index/``): the project pages'
records, the root listing, negative entries, the legacy JSON API's records, and the
generations that let every process see what another changed. ``Storage`` is this plus the
files and the working files; nobody uses this class on its own.

A record this version cannot read (another layout) is None to callers and its project is
remembered in ``unreadable``. With a shared bucket, records are written there too, and those
other replicas wrote are followed (``proxy.replicapages``). Every change to a page goes into
the changelog that followers of this mirror read (``proxy.changelog``).

diskcache is synchronous; async callers run these methods in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import diskcache

from proxy.changelog import Changelog
from proxy.models import PageRecord, ProjectListing, ProjectPage, RootRecord
from proxy.records import usable_page, usable_root
from proxy.replicapages import ReplicaPages

if TYPE_CHECKING:
    from proxy.jsonapi import JsonRecord
    from proxy.shareddocs import SharedDocs
    from proxy.sharedrecords import SharedRecords

log = logging.getLogger(__name__)

_PAGE = "page:"
_MISSING = "missing:"
_JSON = "json:"  # the legacy JSON API: json:<project> and json:<project>/<version>
_SHARED = "shared:"  # per project: the version of the bucket's record our copy matches
_GEN = "gen:"  # per project: bumped by every change to its page or to the files it lists
_UNREADABLE = object()
ROOT_KEY = "root"
PROJECTS_COUNT = "count:projects"


class PageRecords:
    def __init__(
        self, index: diskcache.Cache, shared: SharedRecords | None, changelog_path: Path
    ) -> None:
        self.index = index
        self.shared = shared  # set when replicas share pages and pins through a bucket
        self.unreadable: set[str] = set()  # projects whose stored record could not be used
        # Following the pages other replicas store (sync_pages)
        self._replicas = ReplicaPages(self, shared) if shared is not None else None
        self._changelog_path = changelog_path
        self._changelog: Changelog | None = None
        self._changelog_lock = threading.Lock()
        self._docs: SharedDocs | None = None
        self._root_shared: ProjectListing | None = None

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
            return self._replicas.import_page(project) if self._replicas is not None else None
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
        generation = self.save_page_here(record)
        if self.shared is not None:
            version = self.shared.save_page(record)
            if version is not None:
                self.index.set(_SHARED + record.project, version)
        return generation

    def save_page_here(self, record: PageRecord) -> int:
        """``save_page`` in this replica's index only (a record another replica stored)."""
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
        self.delete_page_here(project)
        if self.shared is not None:
            self.shared.delete_page(project)

    def delete_page_here(self, project: str) -> None:
        """``delete_page`` in this replica's index only (another replica dropped it)."""
        with self.index.transact():
            if self.index.delete(_PAGE + project):
                self.index.decr(PROJECTS_COUNT)
            self.index.incr(_GEN + project)
            self.index.delete(_SHARED + project)
        self.changelog.project_removed(project)

    # -- pages another replica stored (``proxy.replicapages``) -------------------------------

    def sync_pages(self) -> int:
        """Keep the page records other replicas wrote since the last call (all of them the
        first time) that are newer than ours; how many were taken (blocking)."""
        return self._replicas.sync() if self._replicas is not None else 0

    def shared_version(self, project: str) -> object | None:
        """The version of the bucket's record of ``project`` our copy matches, if any."""
        version: object | None = self.index.get(_SHARED + project)
        return version

    def set_shared_version(self, project: str, version: str) -> None:
        self.index.set(_SHARED + project, version)

    def page_here(self, project: str) -> PageRecord | None:
        """This replica's stored record, if usable (nothing read from the bucket)."""
        return usable_page(self._read_record(_PAGE + project))

    @property
    def changelog(self) -> Changelog:
        """The changes applied to what this cache holds, for followers (opened on first use)."""
        with self._changelog_lock:  # first use may come from several threads at once
            if self._changelog is None:
                changelog = Changelog(self._changelog_path)
                if changelog.is_empty() and self.index.get(PROJECTS_COUNT, 0):
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
