"""One prefetch pass: detect changes, sync the queue with async workers, record the result.

Only one pass runs at a time on a cache directory, whoever starts it (the command, the
scheduler in any worker process): an exclusive lock on the mirror's ``prefetch.lock`` decides
(with a shared bucket, also a lease there).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio

from prefetch.changes import RootLimits, detect
from prefetch.people import narrow
from prefetch.progress import PassProgress
from prefetch.selection import resolve
from prefetch.state import PrefetchState
from prefetch.sync import Syncer
from prefetch.xmlrpc import ChangelogClient
from proxy.cache import Mirror
from proxy.errors import ProxyError
from proxy.lease import holding
from proxy.locks import lock_held
from proxy.runtime import Runtime

log = logging.getLogger(__name__)
BATCH = 500
ROOT_DEADLINES = 10  # upstream_deadlines the streamed JSON root may take, unless set on its own


class AlreadyRunning(ProxyError):
    pass


@dataclass
class PassResult:
    ok: bool
    method: str = ""
    target: int | None = None
    synced: int = 0
    failed: int = 0
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def message(self) -> str:
        head = "mirror is up to date" if self.ok else f"{self.failed} projects failed"
        serial = f" at serial {self.target}" if self.target is not None else ""
        return (
            f"{head}{serial}: {self.synced} projects synced, {self.files_added} files "
            f"({self.bytes_added / 1024**2:.1f} MB) added, {self.files_removed} removed, "
            f"in {self.seconds:.1f}s ({self.method})"
        )


# The prefetcher's bookkeeping files: the mirror's storage says where they live.
STATE_FILE = "prefetch.sqlite"
LOCK_FILE = "prefetch.lock"


def state_path(mirror: Mirror) -> Path:
    return mirror.state_file(STATE_FILE)


def is_running(mirror: Mirror) -> bool:
    return lock_held(mirror.state_file(LOCK_FILE))


@contextlib.contextmanager
def _exclusive(mirror: Mirror) -> Iterator[None]:
    fd = os.open(mirror.state_file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning("another prefetch pass is running on this cache") from None
        yield
    finally:
        os.close(fd)


PASS_LEASE_TTL = 120.0  # renewed every 40 s; a crashed replica's lease frees in 2 minutes


@contextlib.asynccontextmanager
async def _one_pass(runtime: Runtime) -> AsyncIterator[None]:
    """One pass per cache directory (a lock), and with a shared bucket one per bucket: the
    storage's lease, so replicas take turns instead of racing."""
    with _exclusive(runtime.mirror):
        lease = runtime.mirror.lease("prefetch")
        if lease is None:
            yield
            return
        async with holding(lease, PASS_LEASE_TTL, AlreadyRunning):
            yield


class Prefetcher:
    def __init__(self, runtime: Runtime, state: PrefetchState) -> None:
        if runtime.upstream is None or runtime.mirror.offline:
            raise ProxyError("prefetch needs the upstream: it cannot run offline")
        self._runtime = runtime
        self._state = state
        self._settings = runtime.settings.prefetch

    async def run(
        self, projects: Sequence[str] | None = None, *, progress_tty: bool | None = None
    ) -> PassResult:
        async with _one_pass(self._runtime):
            started = time.time()
            await self._meta(last_started=started, last_pid=os.getpid())
            try:
                result = await self._run(projects, progress_tty)
            except Exception as exc:
                result = PassResult(ok=False, errors=[f"{type(exc).__name__}: {exc}"])
                # What it stored is made durable all the same (else the next start re-checks).
                with contextlib.suppress(OSError):
                    await self._runtime.mirror.settle_batches()
            result.seconds = time.time() - started
            await self._meta(
                last_finished=time.time(),
                last_result="ok" if result.ok else "failed",
                last_message=result.message() if result.ok or result.method else "",
                last_error=result.errors[-1] if result.errors else None,
                last_method=result.method,
                last_seconds=round(result.seconds, 2),
            )
            return result

    async def _meta(self, **values: object) -> None:
        await anyio.to_thread.run_sync(partial(self._state.set_meta, **values))

    async def _run(self, projects: Sequence[str] | None, tty: bool | None) -> PassResult:
        runtime, state = self._runtime, self._state
        assert runtime.upstream is not None
        selection = resolve(
            projects if projects else self._settings.projects,
            () if projects else self._settings.requirements,
        )
        selection = await narrow(runtime.upstream, runtime.settings, selection)  # by people
        client = ChangelogClient(runtime.upstream, runtime.settings.xmlrpc_url)
        # Followers of this proxy see changes only up to a pass that completed (see
        # proxy/changelog.py): pages stored during this pass are not final yet.
        await anyio.to_thread.run_sync(runtime.mirror.hold_changes)
        deadline = (
            self._settings.root_deadline or ROOT_DEADLINES * runtime.settings.upstream_deadline
        )
        limits = RootLimits(deadline, self._settings.max_root_size)
        detection = await detect(
            self._settings.method, runtime.upstream, client, state, selection, limits
        )
        if detection.target is not None:
            await self._meta(upstream_serial=detection.target)
        log.info(
            "prefetch: %s found %d changed projects%s",
            detection.method,
            detection.queued,
            f" up to serial {detection.target}" if detection.target is not None else "",
        )
        result = PassResult(ok=False, method=detection.method, target=detection.target)
        await anyio.to_thread.run_sync(state.reset_attempts)
        total = await anyio.to_thread.run_sync(state.queue_length)
        progress = PassProgress(total, tty=tty)
        syncer = Syncer(
            self._settings,
            runtime.mirror,
            state,
            asyncio.Semaphore(self._settings.workers * 2),
        )
        for attempt in range(self._settings.max_attempts):
            if attempt:
                await asyncio.sleep(min(0.5 * 2**attempt, 10.0))
            await self._round(syncer, progress, result, attempt)
            if await anyio.to_thread.run_sync(state.queue_length) == 0:
                # "Whole" is what the disk says, not what the syncs reported: a page dropped
                # or a held file gone meanwhile sends its project round again.
                wanting = await anyio.to_thread.run_sync(syncer.wanting)
                if not wanting:
                    break
                log.warning("prefetch: %d projects to sync again: %s", len(wanting), wanting[:5])
                result.errors.append(f"not whole on disk: {', '.join(wanting[:5])}")
                await anyio.to_thread.run_sync(state.requeue, wanting, attempt + 1)
        progress.finish()
        await runtime.mirror.settle_batches()  # durable before the pass says it is whole
        # Every held file's pin in the bucket, for the other replicas' eviction: one written
        # at hold time can be missing (the bucket failed then, a list migrated).
        try:
            await anyio.to_thread.run_sync(runtime.mirror.publish)
        except OSError as exc:  # the bucket is down: the next pass writes them
            log.warning("prefetch: bucket pins not written: %s", exc)
            result.errors.append(f"bucket pins not written: {exc}")
        remaining = await anyio.to_thread.run_sync(state.queue_length)
        result.failed = remaining
        result.ok = remaining == 0
        if result.ok and detection.target is not None:
            await self._meta(mirror_serial=detection.target)
        if result.ok:
            await anyio.to_thread.run_sync(runtime.mirror.settle_changes, detection.target)
        return result

    async def _round(
        self, syncer: Syncer, progress: PassProgress, result: PassResult, attempt: int
    ) -> None:
        """Sync every queued project that has had ``attempt`` tries so far."""
        work: asyncio.Queue[tuple[str, int | None] | None] = asyncio.Queue(BATCH * 2)

        async def produce() -> None:
            after = ""
            while True:
                batch = await anyio.to_thread.run_sync(self._state.queue_batch, after, BATCH)
                if not batch:
                    break
                for name, serial, attempts in batch:
                    if attempts == attempt:
                        await work.put((name, serial))
                after = batch[-1][0]
            for _ in range(self._settings.workers):
                await work.put(None)

        async def consume() -> None:
            while (item := await work.get()) is not None:
                name, serial = item
                try:
                    synced = await syncer.sync(name, serial)
                except Exception as exc:
                    tries = await anyio.to_thread.run_sync(self._state.failed, name)
                    message = f"{name}: {type(exc).__name__}: {exc}"
                    result.errors.append(message)
                    log.warning("prefetch: %s (try %d)", message, tries)
                    if tries >= self._settings.max_attempts:
                        progress.advance(failed=True)
                    continue
                result.synced += 1
                log.info("prefetch: synced %s (%d files added)", name, synced.files_added)
                result.files_added += synced.files_added
                result.bytes_added += synced.bytes_added
                result.files_removed += synced.files_removed
                progress.advance(files=synced.files_added, size=synced.bytes_added)

        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            for _ in range(self._settings.workers):
                group.start_soon(consume)


def status(
    mirror: Mirror, state: PrefetchState | None = None, held: dict[str, int] | None = None
) -> dict[str, object]:
    """The prefetch section of /stats and `pypi-proxy stats` (blocking); ``held``: the files
    the mirror holds and their bytes (``Mirror.held_figures``)."""
    path = state_path(mirror)
    if state is None and not path.exists():
        return {"state": "never run"}
    own = state is None
    state = state or PrefetchState(path)
    try:
        meta = {
            k: state.get_meta(k)
            for k in (
                "mirror_serial",
                "upstream_serial",
                "last_started",
                "last_finished",
                "last_result",
                "last_message",
                "last_error",
                "last_method",
                "last_seconds",
            )
        }
        figures = state.figures()
    finally:
        if own:
            state.close()
    ours, theirs = meta["mirror_serial"], meta["upstream_serial"]
    lag = theirs - ours if isinstance(ours, int) and isinstance(theirs, int) else None
    return {
        "state": "running" if is_running(mirror) else "idle",
        "mirror_serial": ours,
        "upstream_serial": theirs,
        "lag": lag,
        "last_run": {
            "started": meta["last_started"],
            "finished": meta["last_finished"],
            "result": meta["last_result"],
            "message": meta["last_message"],
            "method": meta["last_method"],
            "seconds": meta["last_seconds"],
        },
        "last_error": meta["last_error"],
        **figures,
        **(held or {}),
    }
