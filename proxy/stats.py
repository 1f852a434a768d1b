"""Counters for /stats and /metrics.

Each process counts in memory (a request must not pay for a disk write) and adds its counts to
totals kept in the cache's diskcache now and then, so that several workers, and restarts, add up.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
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
_KEY = "stats:"


class Stats:
    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.started = time.time()

    def add(self, name: str, amount: int = 1) -> None:
        self.pending[name] += amount

    def take(self) -> Counter[str]:
        """This process's counts since the last take (call on the event loop, which counts)."""
        pending, self.pending = self.pending, Counter()
        return pending


def write(storage: Storage, pending: Counter[str]) -> None:
    """Add counts to the shared totals (blocking: call off the event loop)."""
    for name, amount in pending.items():
        if amount:
            storage.index.incr(_KEY + name, amount)


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
    for name, amount in (pending or {}).items():
        numbers[name] = numbers.get(name, 0) + amount
    return numbers


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
