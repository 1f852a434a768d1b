"""Eviction of a store replicas share: one replica at a time, under the storage's lease.

``proxy/evict.py`` keeps one process of a machine at a time with a lock file; replicas on other
machines do not see that lock, and two evicting one bucket at once would each free the bytes
asked for (twice the files gone). So with a shared bucket the pass runs only while this
replica holds the bucket's ``evict`` lease, and a replica that finds it held skips the pass:
the holder is freeing the same bytes.
"""

from __future__ import annotations

import logging

from proxy.evict import Evicted, evict
from proxy.lease import holder_name
from proxy.storage import Storage

log = logging.getLogger(__name__)
EVICT_LEASE_TTL = 900.0  # longer than one pass over a large bucket's listing takes


def evict_once(storage: Storage, max_bytes: int) -> Evicted:
    """``evict``, under the bucket's lease when the storage is shared (blocking)."""
    if storage.shared is None:
        return evict(storage, max_bytes)
    keeper = storage.lease("evict")
    lease = keeper.acquire(holder_name(), EVICT_LEASE_TTL)
    if lease is None:
        log.info("eviction skipped: another replica is evicting")
        return Evicted(0, 0)
    try:
        return evict(storage, max_bytes)
    finally:
        try:
            keeper.release(lease)
        except OSError as exc:  # it runs out by itself
            log.warning("could not release the evict lease: %s", exc)
