"""The size cap kept in the background: after each file stored, evict (``proxy.sharedevict``)
if the cache went over ``max_cache_size``. One eviction at a time per process, off the event
loop; what it freed is counted here. Part of the facade (``proxy.cache``)."""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from proxy.evict import over_cap
from proxy.sharedevict import evict_once
from proxy.stats import Stats
from proxy.storage import Storage


class SizeCap:
    """``cap`` None: no cap, nothing is ever evicted."""

    def __init__(self, storage: Storage, stats: Stats, cap: int | None) -> None:
        self._storage = storage
        self._stats = stats
        self._cap = cap
        self._background: set[asyncio.Task[None]] = set()
        self._evicting = False

    def after_fill(self) -> None:
        cap = self._cap
        if cap is None or self._evicting:
            return
        self._evicting = True

        async def run() -> None:
            try:
                if await anyio.to_thread.run_sync(over_cap, self._storage, cap):
                    done = await anyio.to_thread.run_sync(evict_once, self._storage, cap)
                    self._stats.add("evicted_files", done.files)
                    self._stats.add("evicted_bytes", done.bytes)
            finally:
                self._evicting = False

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        while self._background:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._background))
