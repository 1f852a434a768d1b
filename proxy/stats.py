"""Counters for /stats, /metrics and the status page.

Each process counts in memory (a request must not pay for a disk write) and adds its counts to
totals kept in the cache's diskcache now and then, so that several workers, and restarts, add up.
A request is counted once, by ``Stats.request``, called from one place (``proxy.web.counting``)
when its answer is complete. It only adds to the request's latency bucket (and its project):
the request counters, hits and misses and the per-minute series of the last hour are derived
from those buckets when they are written (``write``, every two seconds, off the event loop),
so the hot path pays for two or three dictionary updates.
"""

from __future__ import annotations

import sqlite3
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Any

from proxy.storage import Storage

COUNTERS = (
    "requests",
    "page_hits",
    "page_misses",
    "page_stale",
    "page_revalidated",
    "file_hits",
    "file_misses",
    "not_found",
    "bytes_served",
    "bytes_fetched",
    "upstream_errors",
    "integrity_errors",
    "entries_dropped",
    "pages_distrusted",
    "evicted_files",
    "evicted_bytes",
)
# Upper bounds (seconds) of the latency histogram's buckets; the last bucket is +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Routes whose requests are the clients' (pages and files): what "requests" and the hit ratio
# count. The others (/stats, /metrics, admin...) are only in the histogram.
CLIENT_ROUTES = frozenset({"page", "root", "file"})
# What a client request adds to the counters, by route kind and outcome. A stale page is a
# miss (the upstream was asked) that was answered from the cache.
_ADDS = {
    ("page", "hit"): ("page_hits",),
    ("page", "miss"): ("page_misses",),
    ("page", "stale"): ("page_misses", "page_stale"),
    ("page", "not_found"): ("not_found",),
    ("file", "hit"): ("file_hits",),
    ("file", "miss"): ("file_misses",),
    ("file", "not_found"): ("not_found",),
}
SERIES_MINUTES = 60
TOP_KEEP = 100  # projects remembered by request count; the rest are dropped, smallest first
_KEY = "stats:"
_HIST = "hist:"  # pending "hist:<route>:<outcome>:<bucket>" and "histsum:<route>:<outcome>"
_HIST_SUM = "histsum:"
_PROJECT = "project:"  # pending "project:<name>"
_ORIGIN = "origin:"  # pending "origin:<scheme://host:port>": upstream errors by origin
ORIGINS_KEEP = 64
_SERIES_KEY = _KEY + "series"
_TOP_KEY = _KEY + "top-projects"
_LATENCY_KEY = _KEY + "latency"
_ORIGINS_KEY = _KEY + "upstream-errors"


def _bucket_keys(route: str, outcome: str) -> tuple[tuple[str, ...], str]:
    series = f"{route}:{outcome}"
    return tuple(f"{_HIST}{series}:{i}" for i in range(len(BUCKETS) + 1)), _HIST_SUM + series


class Stats:
    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.started = time.time()
        self._keys: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}

    def add(self, name: str, amount: int = 1) -> None:
        self.pending[name] += amount

    def request(self, route: str, outcome: str, seconds: float, project: str | None = None) -> None:
        """One answered request: the only place a request is counted (see the module's
        docstring for what is derived from it). Called for every request, hot hits included."""
        keys = self._keys.get((route, outcome))
        if keys is None:
            keys = self._keys[(route, outcome)] = _bucket_keys(route, outcome)
        pending = self.pending
        pending[keys[0][bisect_left(BUCKETS, seconds)]] += 1
        pending[keys[1]] += round(seconds * 1_000_000)
        if project is not None and route in CLIENT_ROUTES:
            pending[_PROJECT + project] += 1

    def upstream_error(self, origin: str) -> None:
        """A failed upstream fetch, counted in total and for its origin (no credentials: an
        origin is scheme, host and port)."""
        self.pending["upstream_errors"] += 1
        self.pending[_ORIGIN + origin] += 1

    def take(self) -> Counter[str]:
        """This process's counts since the last take (call on the event loop, which counts)."""
        pending, self.pending = self.pending, Counter()
        return pending


def write(storage: Storage, pending: Counter[str], now: float | None = None) -> None:
    """Add counts to the shared totals (blocking: call off the event loop). All or nothing:
    one transaction, so a refused write leaves the totals as they were."""
    if not any(pending.values()):
        return
    cache = storage.index
    latency: dict[str, list[int]] = {}
    minute: Counter[str] = Counter()
    projects: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    with cache.transact():
        for name, amount in pending.items():
            if not amount:
                continue
            if name.startswith(_HIST):
                series, _, bucket = name[len(_HIST) :].rpartition(":")
                latency.setdefault(series, [0] * (len(BUCKETS) + 2))[int(bucket)] += amount
            elif name.startswith(_HIST_SUM):
                latency.setdefault(name[len(_HIST_SUM) :], [0] * (len(BUCKETS) + 2))[-1] += amount
            elif name.startswith(_PROJECT):
                projects[name[len(_PROJECT) :]] += amount
            elif name.startswith(_ORIGIN):
                origins[name[len(_ORIGIN) :]] += amount
            else:
                cache.incr(_KEY + name, amount)
        for name, amount in derived(pending, minute).items():
            cache.incr(_KEY + name, amount)
        if latency:
            stored: dict[str, list[int]] = cache.get(_LATENCY_KEY) or {}
            for series, counts in latency.items():
                old = stored.get(series) or [0] * len(counts)
                stored[series] = [a + b for a, b in zip(old, counts, strict=True)]
            cache.set(_LATENCY_KEY, stored)
        if minute:
            # Counted in the minute they are written in: at most one flush (2 s) late.
            when = now if now is not None else time.time()
            _merge_series(cache, {int(when // 60): minute}, when)
        if projects:
            top: Counter[str] = Counter(cache.get(_TOP_KEY) or {})
            top.update(projects)
            cache.set(_TOP_KEY, dict(top.most_common(TOP_KEEP)))
        if origins:
            errors: Counter[str] = Counter(cache.get(_ORIGINS_KEY) or {})
            errors.update(origins)
            cache.set(_ORIGINS_KEY, dict(errors.most_common(ORIGINS_KEEP)))


def derived(pending: Counter[str], minute: Counter[str] | None = None) -> Counter[str]:
    """The client-request counters that ``pending``'s latency buckets stand for, and, into
    ``minute``, the requests, hits and misses they add to the per-minute series."""
    found: Counter[str] = Counter()
    for name, amount in pending.items():
        if not amount or not name.startswith(_HIST):
            continue
        route, outcome, _bucket = name[len(_HIST) :].split(":")
        if route not in CLIENT_ROUTES:
            continue
        found["requests"] += amount
        for counter in _ADDS.get(("file" if route == "file" else "page", outcome), ()):
            found[counter] += amount
        if minute is not None:
            minute["requests"] += amount
            if outcome == "hit":
                minute["hits"] += amount
            elif outcome in ("miss", "stale"):
                minute["misses"] += amount
    return found


def _merge_series(cache: Any, minutes: dict[int, Counter[str]], now: float) -> None:
    oldest = int(now // 60) - SERIES_MINUTES
    series: dict[int, dict[str, int]] = cache.get(_SERIES_KEY) or {}
    for minute, counts in minutes.items():
        row = series.setdefault(minute, {})
        for what, amount in counts.items():
            row[what] = row.get(what, 0) + amount
    cache.set(_SERIES_KEY, {m: row for m, row in series.items() if m > oldest})


def totals(storage: Storage, pending: Counter[str] | None = None) -> dict[str, int]:
    """The shared totals, after adding ``pending`` (blocking). When the disk refuses the write
    (full), the counts are reported anyway and left in ``pending`` for a later try."""
    saved = True
    if pending:
        try:
            write(storage, pending)
        except (OSError, sqlite3.Error):
            saved = False
    numbers = {name: int(storage.index.get(_KEY + name, 0)) for name in COUNTERS}
    if pending and saved:
        pending.clear()
    if pending:
        for name, amount in (pending + derived(pending)).items():
            if name in numbers:
                numbers[name] += amount
    return numbers


@dataclass(frozen=True)
class Latency:
    """One histogram series: requests per bucket (not cumulative; the last is +Inf) and the
    sum of their durations in seconds."""

    route: str
    outcome: str
    buckets: tuple[int, ...]
    sum_seconds: float

    @property
    def count(self) -> int:
        return sum(self.buckets)


def latency(storage: Storage) -> list[Latency]:
    """The shared latency histogram (blocking)."""
    stored: dict[str, list[int]] = storage.index.get(_LATENCY_KEY) or {}
    found = []
    for series, counts in sorted(stored.items()):
        route, _, outcome = series.partition(":")
        found.append(Latency(route, outcome, tuple(counts[:-1]), counts[-1] / 1_000_000))
    return found


def series(storage: Storage, now: float) -> list[dict[str, int]]:
    """Requests, hits and misses per minute over the last hour, oldest first, one row per
    minute (blocking). ``minute`` is the minute's start, in epoch seconds."""
    stored: dict[int, dict[str, int]] = storage.index.get(_SERIES_KEY) or {}
    last = int(now // 60)
    return [
        {
            "minute": m * 60,
            "requests": stored.get(m, {}).get("requests", 0),
            "hits": stored.get(m, {}).get("hits", 0),
            "misses": stored.get(m, {}).get("misses", 0),
        }
        for m in range(last - SERIES_MINUTES + 1, last + 1)
    ]


def top_projects(storage: Storage, limit: int = 10) -> list[tuple[str, int]]:
    """The projects asked most (pages and files), with their request counts (blocking)."""
    top: Counter[str] = Counter(storage.index.get(_TOP_KEY) or {})
    return top.most_common(limit)


def upstream_errors(storage: Storage) -> dict[str, int]:
    """Failed upstream fetches by origin, all workers (blocking)."""
    return dict(storage.index.get(_ORIGINS_KEY) or {})


def summary(totals: dict[str, int], cache: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    """The /stats document: counters, derived ratios and the cache's figures."""
    hits = totals["page_hits"] + totals["file_hits"]
    misses = totals["page_misses"] + totals["file_misses"]
    served = hits + misses
    return {
        "requests": totals["requests"],
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(hits / served, 4) if served else None,
        "pages": {
            "hits": totals["page_hits"],
            "misses": totals["page_misses"],
            "stale_served": totals["page_stale"],
            "revalidated": totals["page_revalidated"],
        },
        "files": {"hits": totals["file_hits"], "misses": totals["file_misses"]},
        "not_found": totals["not_found"],
        "bytes_served": totals["bytes_served"],
        "bytes_fetched": totals["bytes_fetched"],
        "upstream_errors": totals["upstream_errors"],
        "integrity_errors": totals["integrity_errors"],
        "entries_dropped": totals["entries_dropped"],
        "pages_distrusted": totals["pages_distrusted"],
        "evicted": {"files": totals["evicted_files"], "bytes": totals["evicted_bytes"]},
        "cache": {
            "projects": cache["projects"],
            "files": cache["files"],
            "bytes": cache["bytes"],
        },
        **extra,
    }
