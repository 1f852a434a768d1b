"""The mirror's figures: what /stats, /metrics, the status page and ``pypi-proxy stats`` show,
read from what every process wrote (requests are counted by ``Mirror.count_request``). Part of the
facade (``proxy.cache``), which owns this object and hands its methods on (documented there).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio

from proxy.answers import Figures
from proxy.stats import Latency, Stats, latency, series, top_projects, totals, upstream_errors
from proxy.storage import Storage
from proxy.upstream import Upstream


class Counters:
    def __init__(self, storage: Storage, stats: Stats, upstream: Upstream | None) -> None:
        self._storage = storage
        self._stats = stats
        self._upstream = upstream

    async def figures(self) -> Figures:
        pending = self._stats.take()
        try:
            return await anyio.to_thread.run_sync(self._figures, pending)
        finally:
            self._stats.pending.update(pending)  # whatever the disk would not take yet

    def stored_figures(self) -> Figures:
        return self._figures(Counter())

    def _figures(self, pending: Counter[str]) -> Figures:
        now = time.time()
        cache = self._storage.totals()
        counters = totals(self._storage, pending)  # first: adds this worker's pending counts
        return Figures(
            counters=counters,
            cache=cache,
            upstream_errors_by_origin=upstream_errors(self._storage),
            top_projects=[
                {"project": name, "requests": count} for name, count in top_projects(self._storage)
            ],
            last_hour=series(self._storage, now),
            uptime_seconds=round(now - self._stats.started, 1),
        )

    async def latency(self) -> list[Latency]:
        return await anyio.to_thread.run_sync(latency, self._storage)

    def upstream_health(self) -> dict[str, Any] | None:
        if self._upstream is None:
            return None
        breakers = self._upstream.breaker
        return {**breakers.snapshot(), "origin": breakers.primary}
