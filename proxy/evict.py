"""Keeping on-demand files under a size cap: least recently used first, by file atime.

The access time lives on the file itself (set explicitly on each hit, so ``noatime`` mounts do
not matter), which survives restarts and is shared by every worker. Files the prefetcher pinned
are never evicted.
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
    """Remove least recently used unpinned files until the cache is under the low-water mark.

    One process at a time (a lock file); another process finding it locked just returns.
    """
    lock_fd = os.open(storage.state_dir / "evict.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Evicted(0, 0)
        files = storage.iter_files()
        total = sum(st.st_size for _p, st in files)
        target = int(max_bytes * LOW_WATER)
        removed = freed = 0
        for path, _st in sorted(files, key=lambda item: item[1].st_atime):
            if total <= target:
                break
            if storage.is_pinned(path.parent.name):
                continue
            size = storage.remove_file(path)
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
