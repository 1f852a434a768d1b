"""The prefetcher inside ``serve``: figures in /stats, an admin action, and, when enabled, a
schedule (an interval or a cron expression) that never starts a pass while one is running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from prefetch.runner import AlreadyRunning, Prefetcher, is_running, state_path, status
from prefetch.state import PrefetchState
from proxy.runtime import Runtime

log = logging.getLogger(__name__)


@asynccontextmanager
async def prefetch_service(runtime: Runtime) -> AsyncIterator[None]:
    settings = runtime.settings
    mirror = runtime.mirror
    state = await anyio.to_thread.run_sync(PrefetchState, state_path(mirror))
    runtime.extra_stats.append(lambda: {"prefetch": status(mirror, state, mirror.held_figures())})
    tasks: set[asyncio.Task[None]] = set()
    scheduler: AsyncIOScheduler | None = None
    if runtime.upstream is not None:
        prefetcher = Prefetcher(runtime, state)

        async def run_pass() -> None:
            try:
                result = await prefetcher.run(progress_tty=False)
            except AlreadyRunning:
                log.info("prefetch: skipped, a pass is already running")
                return
            log.log(
                logging.INFO if result.ok else logging.WARNING,
                "prefetch: %s",
                result.message() if result.method else "; ".join(result.errors[-3:]),
            )

        async def start_now() -> dict[str, Any]:
            # A pass may run here or in any process on this cache (the command, a worker).
            if any(not t.done() for t in tasks) or await anyio.to_thread.run_sync(
                is_running, mirror
            ):
                progress = await anyio.to_thread.run_sync(status, mirror, state)
                return {
                    "started": False,
                    "reason": "a pass is already running",
                    "progress": progress,
                }
            task = asyncio.create_task(run_pass())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return {"started": True}

        runtime.actions["prefetch"] = start_now
        if settings.prefetch.enabled:
            trigger = (
                CronTrigger.from_crontab(settings.prefetch.cron)
                if settings.prefetch.cron
                else IntervalTrigger(seconds=max(settings.prefetch.interval, 1.0))
            )
            scheduler = AsyncIOScheduler()
            # max_instances=1 and coalesce: never two passes, never a backlog of missed runs.
            scheduler.add_job(
                run_pass,
                trigger,
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(
                    trigger.timezone if hasattr(trigger, "timezone") else None
                ),
                misfire_grace_time=None,
            )
            scheduler.start()
            log.info(
                "prefetch scheduled: %s",
                settings.prefetch.cron or f"every {settings.prefetch.interval:g}s",
            )
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        state.close()
