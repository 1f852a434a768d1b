"""The scrub inside ``serve``: every ``scrub_interval`` seconds, the ``verify`` pass (hash every
stored file against its page record, drop what is damaged, fetch mirrored files again), so bit
rot is found without anyone running ``pypi-proxy verify``.

One scrub at a time per cache directory, whichever worker's timer fires first (a lock in
``state/``); its last result is kept in the cache so every worker's /stats shows the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from proxy.cache import Mirror
from proxy.runtime import Runtime
from proxy.verify import verify

log = logging.getLogger(__name__)
LAST_KEY = "scrub:last"
LOCK = "scrub.lock"


def scrubbing(mirror: Mirror) -> bool:
    """Whether some process is scrubbing this cache now (blocking)."""
    return mirror.lock(LOCK).held()


def last_scrub(mirror: Mirror) -> dict[str, Any] | None:
    """The summary of the last pass that ended, whichever worker ran it (blocking)."""
    last: dict[str, Any] | None = mirror.note(LAST_KEY)
    return last


async def scrub_once(runtime: Runtime) -> dict[str, Any] | None:
    """One pass, unless another process is scrubbing this cache; its summary."""
    lock = runtime.mirror.lock(LOCK)
    if not await anyio.to_thread.run_sync(lock.take):
        return None
    started = time.time()
    try:
        report = await verify(runtime, repair=True)
    finally:
        lock.release()
    summary = {
        "finished": time.time(),
        "seconds": round(time.time() - started, 2),
        "checked": report.checked,
        # Held rows of files gone, held files the bucket had no pin for: damage too (mended).
        "damaged": report.corrupt
        + report.wrong_size
        + report.missing_pinned
        + report.held_missing
        + report.unpublished_pins,
        "repaired": report.repaired,
        "dropped": report.dropped,
        "failed": report.failed[-5:],
        "exit_status": report.exit_status,
    }
    await anyio.to_thread.run_sync(runtime.mirror.set_note, LAST_KEY, summary)
    level = logging.INFO if report.exit_status == 0 else logging.WARNING
    log.log(level, "scrub: checked %d files, %d damaged", report.checked, summary["damaged"])
    return summary


@asynccontextmanager
async def scrub_service(runtime: Runtime, interval: float) -> AsyncIterator[None]:
    def figures() -> dict[str, Any]:
        return {"scrub": {"interval": interval, "last": last_scrub(runtime.mirror)}}

    runtime.extra_stats.append(figures)

    async def forever() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await scrub_once(runtime)
            except Exception:
                log.exception("scrub failed")

    task = asyncio.create_task(forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
