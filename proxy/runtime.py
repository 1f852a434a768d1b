"""The per-process parts, made once (in the app's lifespan or a command) and passed around."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from proxy.breaker import Breakers
from proxy.cache import Mirror
from proxy.fill import Filler
from proxy.httpclient import make_http_client
from proxy.jsonapi import JsonApi
from proxy.origins import AddressGuard, origin_of
from proxy.pageservice import PageService
from proxy.redact import redact
from proxy.settings import Settings, upstream_warning
from proxy.stats import Stats, write
from proxy.storage import FILES_BYTES, Storage
from proxy.upstream import Upstream
from proxy.upstreamtypes import UpstreamLimits

log = logging.getLogger(__name__)
FLUSH_EVERY = 2.0
SYNC_PAGES_EVERY = 10.0  # seconds between reads of the pages other replicas stored


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    stats: Stats
    index: PageService
    upstream: Upstream | None
    filler: Filler | None
    http: httpx.AsyncClient | None  # pages (and XML-RPC)
    # Added by optional services (the prefetcher) without the core knowing them:
    # figures for /stats (blocking callables) and admin actions.
    extra_stats: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = field(default_factory=dict)
    http_files: httpx.AsyncClient | None = None  # package files: a pool of their own
    # What callers use (web, prefetch, verify): the parts above behind one interface.
    mirror: Mirror = field(init=False)
    _flusher: asyncio.Task[None] | None = None
    _syncer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        storage = await anyio.to_thread.run_sync(_open_storage, settings)
        stats = Stats()
        http: httpx.AsyncClient | None = None
        http_files: httpx.AsyncClient | None = None
        upstream: Upstream | None = None
        if not settings.offline:
            guard = AddressGuard(
                settings.upstream,
                settings.allowed_private_networks,
                also_own=(settings.xmlrpc_url,),
            )
            http = make_http_client(settings, settings.page_connections, guard)
            http_files = make_http_client(settings, settings.file_connections, guard)
            upstream = _make_upstream(settings, http, http_files, guard)
        index = _page_service(settings, storage, upstream, stats)
        runtime = cls(settings, storage, stats, index, upstream, None, http, http_files=http_files)
        runtime.mirror = Mirror(
            storage,
            index,
            stats,
            upstream,
            max_cache_size=settings.max_cache_size,
            remote_timeout=settings.connect_timeout + settings.read_timeout,
            hand_over=settings.accel_redirect is not None,
            made_metadata=settings.wheel_metadata,
            redirect_expiry=settings.s3_redirect_expiry if settings.s3_redirect else None,
            memory_files=settings.memory_files_size,
            metadata_failure_ttl=settings.index_ttl,  # failures to make metadata: as a page
            json_api=JsonApi(storage, upstream, settings.upstream_base, ttl=settings.index_ttl),
        )
        runtime.filler = runtime.mirror.filler
        # Files a crashed prefetch pass stored but had not synced yet: whole, or dropped now
        # (before anything serves them; the next pass fetches them again).
        dropped = await anyio.to_thread.run_sync(runtime.mirror.recover_batches)
        if dropped:
            log.warning("dropped %d stored files an interrupted pass left damaged", dropped)
        runtime._flusher = asyncio.create_task(runtime._flush_forever())
        if storage.shared is not None:
            runtime._syncer = asyncio.create_task(runtime._sync_pages_forever())
            figures = getattr(storage.files, "figures", None)
            if callable(figures):
                runtime.extra_stats.append(figures)
        doubt = None if settings.offline else upstream_warning(settings.upstream)
        if doubt:
            log.warning("upstream %s %s", redact(settings.upstream), doubt)
        log.info(
            "cache %s, upstream %s%s",
            settings.cache_dir,
            redact(settings.upstream),
            " (offline)" if settings.offline else "",
        )
        return runtime

    async def close(self) -> None:
        for task in (self._flusher, self._syncer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.mirror.close()  # downloads under way, then eviction
        for client in (self.http, self.http_files):
            if client is not None:
                await client.aclose()
        await anyio.to_thread.run_sync(write, self.storage, self.stats.take())
        await anyio.to_thread.run_sync(self.storage.flush, self.settings.shutdown_grace)
        self.storage.close()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                await anyio.to_thread.run_sync(write, self.storage, self.stats.take())
            except Exception:
                log.exception("could not save counters")

    async def _sync_pages_forever(self) -> None:
        """Pages other replicas stored (a prefetch on another machine) become ours."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.storage.sync_pages)
            except Exception as exc:  # the bucket is down: try again later, quietly
                log.warning("could not read the pages other replicas stored: %s", exc)
            await asyncio.sleep(SYNC_PAGES_EVERY)


@contextlib.contextmanager
def reading(settings: Settings) -> Iterator[Mirror]:
    """The mirror over what the cache holds, for a one-shot command that only reads it
    (``pypi-proxy stats``): offline, nothing started or swept, the storage closed after."""
    storage = Storage.from_settings(settings)
    try:
        stats = Stats()
        pages = _page_service(settings, storage, None, stats)
        yield Mirror(storage, pages, stats, None)
    finally:
        storage.close()


def _page_service(
    settings: Settings, storage: Storage, upstream: Upstream | None, stats: Stats
) -> PageService:
    return PageService(
        storage,
        upstream,
        stats,
        ttl=settings.index_ttl,
        negative_ttl=settings.negative_ttl,
        memory_bytes=settings.memory_cache_size,
        allowed_file_hosts=settings.allowed_file_hosts,
        made_metadata=settings.wheel_metadata,
    )


def _make_upstream(
    settings: Settings, pages: httpx.AsyncClient, files: httpx.AsyncClient, guard: AddressGuard
) -> Upstream:
    origin = origin_of(settings.upstream)
    breakers = Breakers(
        str(origin) if origin is not None else redact(settings.upstream),
        settings.breaker_threshold,
        settings.breaker_reset,
    )
    limits = UpstreamLimits(
        max_page_size=settings.max_page_size,
        max_page_inflated=settings.max_page_inflated,
        deadline=settings.upstream_deadline,
        max_redirects=settings.max_redirects,
    )
    return Upstream(
        pages,
        settings.upstream,
        files_client=files,
        retries=settings.retries,
        breakers=breakers,
        limits=limits,
        allowed_file_hosts=settings.allowed_file_hosts,
        guard=guard,
    )


def _open_storage(settings: Settings) -> Storage:
    storage = Storage.from_settings(settings)
    try:
        storage.check_writable()  # one clear line now, not a traceback at the first download
    except BaseException:
        storage.close()
        raise
    storage.start_background()  # uploads to a bucket: what an earlier run left, then new
    swept = storage.sweep_tmp()
    if swept:
        log.info("removed %d partial downloads left by an earlier run", swept)
    if FILES_BYTES not in storage.index:
        storage.recount()
    return storage
