"""What the cache holds, per project: the query API's figures and the admin API's forgetting.

A project is what its stored page lists; a file is *held* when its bytes are on disk under
``files/``, *pinned* when the mirror keeps it (on its held list, ``proxy/heldfiles.py``: eviction
never takes it). A project with a pinned file is mirrored; the rest were
fetched on demand. Last access is a held file's atime (see ``Storage.touch``).

Blocking (page records are read from diskcache, files are stat-ed): run in a worker thread.
Listing never holds more than one page of results (plus, for an order other than by name, a
heap of the rows up to the one asked for), however many projects the cache holds.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from proxy.locate import METADATA_SUFFIX, target_for
from proxy.models import DistFile, PageRecord
from proxy.storage import Storage

SortKey = Literal["name", "bytes", "files", "last_access"]
SORT_KEYS: tuple[SortKey, ...] = ("name", "bytes", "files", "last_access")
# How deep ``?page=`` may reach in an order other than by name: the heap that finds the rows
# holds this many at most. By name, ``?after=`` pages through everything at constant cost.
MAX_DEPTH = 10_000
SORTED_MAX_AGE = 30.0  # seconds an order other than by name is kept before it is read again


@dataclass(frozen=True, slots=True)
class FileFacts:
    filename: str
    sha256: str | None
    size: int | None  # on disk when stored, else what the page says
    stored: bool  # on disk now
    pinned: bool  # on the held list (or pinned in the bucket): eviction never takes it
    last_access: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "stored": self.stored,
            "held": self.stored,  # its name before "held" came to mean the held list
            "pinned": self.pinned,
            "last_access": self.last_access,
        }


@dataclass(frozen=True, slots=True)
class ProjectFacts:
    name: str
    serial: int | None
    listed: int  # files the page lists
    files: int  # files stored on disk
    bytes: int  # their size
    pinned: int  # held files the mirror keeps
    last_access: float | None
    fetched_at: float

    @property
    def mode(self) -> str:
        return "mirror" if self.pinned else "on demand"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serial": self.serial,
            "mode": self.mode,
            "listed": self.listed,
            "files": self.files,
            "bytes": self.bytes,
            "pinned": self.pinned,
            "last_access": self.last_access,
            "fetched_at": self.fetched_at,
        }


def _sha(storage: Storage, entry: DistFile, filename: str) -> str | None:
    target = target_for(entry, filename)
    if target is None:
        return None
    return target.sha256 or storage.hash_for_url(target.url)


def file_facts(storage: Storage, entry: DistFile) -> FileFacts:
    sha = _sha(storage, entry, entry.filename)
    stored = storage.stored(sha, entry.filename) if sha is not None else None
    return FileFacts(
        filename=entry.filename,
        sha256=sha,
        size=stored.size if stored is not None else entry.size,
        stored=stored is not None,
        pinned=sha is not None and storage.is_held(sha),
        last_access=stored.atime if stored is not None else None,
    )


def project_files(storage: Storage, record: PageRecord) -> list[FileFacts]:
    return [file_facts(storage, entry) for entry in record.page.files]


def project_facts(storage: Storage, record: PageRecord) -> ProjectFacts:
    on_disk = [f for f in project_files(storage, record) if f.stored]
    accessed = [f.last_access for f in on_disk if f.last_access is not None]
    return ProjectFacts(
        name=record.project,
        serial=record.page.serial,
        listed=len(record.page.files),
        files=len(on_disk),
        bytes=sum(f.size or 0 for f in on_disk),
        pinned=sum(1 for f in on_disk if f.pinned),
        last_access=max(accessed) if accessed else None,
        fetched_at=record.fetched_at,
    )


def _facts(storage: Storage, names: Iterator[str] | list[str]) -> Iterator[ProjectFacts]:
    for name in names:
        record = storage.load_page(name)
        if record is not None:  # dropped since it was listed
            yield project_facts(storage, record)


def list_by_name(storage: Storage, after: str, limit: int) -> list[ProjectFacts]:
    """One page of projects in name order, after ``after``: costs what it shows."""
    return list(_facts(storage, storage.page_names(after, limit)))


def _order(facts: ProjectFacts, key: SortKey) -> tuple[float, str]:
    # Largest (or most recent) first; ties by name, so pages never overlap or skip.
    value = {"bytes": facts.bytes, "files": facts.files, "last_access": facts.last_access or 0.0}
    return (-float(value[key]) if key != "name" else 0.0, facts.name)


def list_sorted(storage: Storage, key: SortKey, offset: int, limit: int) -> list[ProjectFacts]:
    """Rows ``offset`` to ``offset + limit`` in ``key`` order (largest first): every stored
    page is read once, and at most ``offset + limit`` rows are kept (a heap)."""
    if key == "name":
        names = itertools.islice(storage.iter_page_names(), offset, offset + limit)
        return list(_facts(storage, list(names)))
    best = heapq.nsmallest(
        offset + limit, _facts(storage, storage.iter_page_names()), key=lambda f: _order(f, key)
    )
    return best[offset:]


class SortedViews:
    """The first MAX_DEPTH rows of each order other than by name, kept for ``max_age``
    seconds: one full read of the pages (seconds for 100,000 projects) then serves every page
    of that order, and requests that arrive meanwhile wait for it rather than start their own."""

    def __init__(
        self, storage: Storage, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._storage = storage
        self._max_age = max_age
        self._clock = clock
        self._locks = {key: threading.Lock() for key in SORT_KEYS}
        self._memo: dict[SortKey, tuple[float, float, list[ProjectFacts]]] = {}

    def rows(self, key: SortKey, offset: int, limit: int) -> tuple[list[ProjectFacts], float]:
        """The rows and when (epoch seconds) they were read (blocking)."""
        with self._locks[key]:
            memo = self._memo.get(key)
            if memo is None or self._clock() - memo[0] >= self._max_age:
                rows = list_sorted(self._storage, key, 0, MAX_DEPTH)
                memo = self._memo[key] = (self._clock(), time.time(), rows)
        return memo[2][offset : offset + limit], memo[1]


@dataclass(frozen=True, slots=True)
class Forgotten:
    files: int
    bytes: int
    kept_pinned: int


def forget_project(storage: Storage, record: PageRecord) -> Forgotten:
    """Drop a project's page, its JSON API records and every held file of it the mirror does
    not pin (the distributions and their ``.metadata``). Pinned files stay: the mirror's next
    pass brings the page back."""
    files = freed = kept = 0
    for entry in record.page.files:
        names = [entry.filename]
        if entry.has_metadata:
            names.append(entry.filename + METADATA_SUFFIX)
        for name in names:
            sha = _sha(storage, entry, name)
            if sha is None or storage.stored(sha, name) is None:
                continue
            if storage.is_held(sha):
                kept += 1
                continue
            size = storage.remove(sha, name)
            files += 1
            freed += size
    storage.delete_page(record.project)
    storage.delete_json(record.project)
    if files:
        storage.mark_changed(record.project)
    return Forgotten(files, freed, kept)
