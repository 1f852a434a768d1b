"""Keeping on-demand files under a size cap: least recently used first, by file atime.

The access time is the store's (on a local disk, the file's atime, set explicitly on each hit:
see ``proxy/localstore.py``), which survives restarts and is shared by every worker. Files the
mirror holds (the held list, ``proxy/heldfiles.py``; with a bucket, any replica's pins) are
never evicted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass

from proxy.storage import Storage

log = logging.getLogger(__name__)
LOW_WATER = 0.9  # evict down to 90% of the cap, so eviction does not run on every fill


@dataclass(frozen=True, slots=True)
class Evicted:
    files: int
    bytes: int


def over_cap(storage: Storage, max_bytes: int | None) -> bool:
    return max_bytes is not None and storage.totals()["bytes"] > max_bytes


def evict(storage: Storage, max_bytes: int) -> Evicted:
    """Remove least recently used files nobody holds until the cache is under the low-water mark.

    One process at a time (a lock file); another process finding it locked just returns.
    """
    lock_fd = os.open(storage.state_path("evict.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Evicted(0, 0)
        files = list(storage.iter_stored())
        total = sum(stored.size for stored in files)
        target = int(max_bytes * LOW_WATER)
        removed = freed = 0
        for stored in sorted(files, key=lambda stored: stored.atime):
            if total <= target:
                break
            if storage.is_held(stored.sha256):
                continue
            size = storage.remove(stored.sha256, stored.filename)
            total -= size
            freed += size
            removed += 1
        if removed:
            log.info(
                "evicted %d files (%d bytes) to stay under %d bytes", removed, freed, max_bytes
            )
        return Evicted(removed, freed)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
