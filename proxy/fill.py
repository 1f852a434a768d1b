"""Filling the cache with one file: a single upstream download that any number of clients read
while it grows.

The download runs as its own task, so a client that goes away does not stop it. It writes to a
temporary file under ``tmp/`` while hashing; the file is renamed into ``files/`` only when its
length and sha256 match the index. Readers never get the last byte before that check passes, so
a client can never complete a transfer of wrong bytes: on a mismatch its connection is cut short.

Across worker processes, an exclusive ``flock`` on ``tmp/<key>.lock`` elects one downloader; the
others follow its temporary file (named inside the lock file) by polling: see ``proxy/follow.py``
for what readers see and why they can never complete wrong bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from proxy.batchsync import BatchJournal
from proxy.errors import IntegrityError, NotFound, UpstreamUnavailable
from proxy.evict import LOW_WATER
from proxy.filestore import StoredFile
from proxy.fillplan import Plan, StoredDownload, close_part, prepare
from proxy.follow import KEEP_VERIFIED, Download, RemoteDownload, verified_name
from proxy.locks import release_lock
from proxy.names import is_sha256
from proxy.redact import redact
from proxy.storage import Storage
from proxy.upstream import Upstream

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes written and hashed per batch, in a worker thread
RELEASE_BEFORE_FLUSH = 32 * 1024**2


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    filename: str  # as stored: the distribution's filename, plus ".metadata" for PEP 658 files
    sha256: str | None
    size: int | None

    @property
    def key(self) -> str:
        """Names the download's lock and temporary file: never a page's raw value (a hash
        field could hold a path), and per filename, since two names may share one hash."""
        what = self.sha256 if self.sha256 and is_sha256(self.sha256) else self.url
        return hashlib.sha256(f"{what}\0{self.filename}".encode()).hexdigest()


def _close_all(fd: int, part: Path, failed: bool, lock: tuple[Path, int] | None) -> None:
    try:
        close_part(fd, part, failed)
    finally:
        if lock is not None:
            release_lock(*lock)


def _write_all(fd: int, hasher: hashlib._Hash, data: bytearray) -> int:
    """Append ``data`` to the file and the digest (in a worker thread); its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    hasher.update(data)
    return len(data)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class Filler:
    """Starts and shares downloads; one per process.

    ``max_stored_size`` (the cache's size cap) keeps a file larger than the whole cache from
    being stored: it is streamed to its readers, verified the same way, and then discarded, so
    it neither evicts the cache nor is fetched twice by readers that overlap. Files the mirror
    pins are always stored.
    """

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream,
        *,
        on_fetched: Callable[[int], None] = lambda n: None,
        on_corrupt: Callable[[], None] = lambda: None,
        on_committed: Callable[[StoredFile], None] = lambda stored: None,
        remote_timeout: float = 60.0,
        max_stored_size: int | None = None,
        journal: BatchJournal | None = None,
    ) -> None:
        self._storage = storage
        # Set: downloads started ``batched`` are made durable per batch (see proxy/batchsync)
        self._journal = journal
        self._settling: asyncio.Task[None] | None = None
        self._upstream = upstream
        self._inflight: dict[str, Download] = {}
        self._starting: dict[str, asyncio.Future[Download]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_fetched = on_fetched
        self._on_corrupt = on_corrupt
        self._on_committed = on_committed
        self._remote_timeout = remote_timeout
        self._max_stored = max_stored_size

    def _final(self, target: Target) -> Callable[[], StoredFile | None]:
        """The stored file of ``target``, once it is stored: readers that follow a download
        compare its inode with the one they read."""

        def find() -> StoredFile | None:
            sha = target.sha256 or self._storage.hash_for_url(target.url)
            return self._storage.stored(sha, target.filename) if sha is not None else None

        return find

    def _too_big(self, size: int | None, pinned: bool) -> bool:
        # Above the mark eviction empties down to, storing a file would evict everything else
        # and then the file itself.
        cap = self._max_stored
        return not pinned and size is not None and cap is not None and size > cap * LOW_WATER

    def too_big(self, target: Target) -> bool:
        """Whether ``target`` would be streamed without being stored (larger than the cap)."""
        return self._too_big(target.size, False)

    def start(self, target: Target, *, pinned: bool = False) -> Download:
        """The progress of the download of ``target``, joining one already under way."""
        existing = self._inflight.get(target.key)
        if existing is not None:
            return existing
        return self._launch(target, self._prepare(target, pinned), pinned, False)

    async def start_off_loop(
        self, target: Target, *, pinned: bool = False, batched: bool = False
    ) -> Download:
        """``start``, with its file system calls (a lock file, the temporary file) in a worker
        thread: the prefetcher starts thousands, and each costs the event loop a millisecond.
        ``batched``: made durable per batch, when this filler has a journal."""
        existing = self._inflight.get(target.key)
        if existing is not None:
            return existing
        starting = self._starting.get(target.key)
        if starting is not None:  # another task of this process is taking its lock now
            return await asyncio.shield(starting)
        future: asyncio.Future[Download] = asyncio.get_running_loop().create_future()
        self._starting[target.key] = future
        try:
            plan = await anyio.to_thread.run_sync(self._prepare, target, pinned)
            download = self._launch(target, plan, pinned, batched)
            future.set_result(download)
            return download
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._starting[target.key]

    def _prepare(self, target: Target, pinned: bool) -> Plan:
        unstored = self._too_big(target.size, pinned)
        return prepare(self._storage, target.key, unstored, self._final(target))

    def _launch(self, target: Target, plan: Plan, pinned: bool, batched: bool) -> Download:
        """On the event loop: the Download the plan calls for, its task started."""
        if plan.error is not None:
            failed = Download(plan.part, target.size)
            failed.expected = target.sha256
            failed.finish(plan.error)
            return failed
        if plan.follow is not None:
            existing = self._inflight.get(target.key)
            if existing is not None:  # this process's own, begun while the lock was tried
                return existing
            log.debug("following another worker's download of %s", target.filename)
            follower = RemoteDownload(
                plan.follow, self._final(target), target.size, self._remote_timeout
            )
            follower.expected = target.sha256
            return follower
        if plan.stored is not None:
            return StoredDownload(plan.stored[0], plan.stored[1], target.size, target.sha256)
        assert plan.part is not None and plan.fds is not None
        progress = Download(plan.part, target.size)
        progress.expected = target.sha256
        fd, progress.read_fd = plan.fds
        self._inflight[target.key] = progress
        batched = batched and self._journal is not None
        task = asyncio.create_task(self._run(target, progress, plan.lock, pinned, fd, batched))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return progress

    async def _run(
        self,
        target: Target,
        progress: Download,
        lock: tuple[Path, int] | None,
        pinned: bool,
        fd: int,
        batched: bool = False,
    ) -> None:
        assert progress.part is not None
        part = progress.part
        error: str | None = None
        started = time.monotonic()
        try:
            if lock is not None:
                os.ftruncate(lock[1], 0)
                os.pwrite(lock[1], part.name.encode(), 0)
            await self._download(target, progress, fd)
            digest = progress.sha256
            assert digest is not None
            if progress.written >= RELEASE_BEFORE_FLUSH:
                # Readers may finish now: flushing a large file to disk takes seconds they
                # need not wait for (a failure to store it leaves what they sent correct).
                # A small one is stored before its readers finish, so a client that got it
                # finds it in the cache at once.
                progress.verified = True
                progress.notify()
            if lock is None or self._too_big(progress.written, pinned):
                if lock is not None:
                    # Followers in other workers know this file only by its inode: leave it
                    # under the name that says "verified" for a while, then let it go.
                    verified = verified_name(part)
                    os.rename(part, verified)
                    asyncio.get_running_loop().call_later(KEEP_VERIFIED, _unlink_quietly, verified)
                log.info(
                    "streamed %s (%d bytes) without storing it: larger than max_cache_size",
                    target.filename,
                    progress.written,
                )
            else:
                stored, due = await anyio.to_thread.run_sync(
                    self.store, part, fd, digest, target, batched
                )
                progress.final = stored.path
                self._on_committed(stored)
                if due:
                    self.settle_soon()
                # A batch's files are logged by their caller, once per project.
                log.log(
                    logging.DEBUG if batched else logging.INFO,
                    "cached %s (%d bytes in %.2fs)",
                    target.filename,
                    progress.written,
                    time.monotonic() - started,
                )
        except IntegrityError as exc:
            self._on_corrupt()
            error = str(exc)
            log.warning("discarded %s: %s", target.filename, exc)
        except NotFound as exc:
            progress.not_found = True
            error = str(exc)
        except (UpstreamUnavailable, httpx.TransportError) as exc:
            progress.upstream_failed = True
            error = f"upstream failed while sending {target.filename}: {type(exc).__name__}"
            log.warning("%s", error)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("download of %s failed: %s", target.filename, error)
        except BaseException:
            error = "cancelled"
            raise
        finally:
            failed = error is not None or progress.final is None
            if batched:
                # Off the loop, which a prefetch pass keeps busy, in one thread call. The lock
                # goes before the end is announced: its followers find the stored file (or,
                # failed, none), as they would a moment later.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close_all, fd, part, failed, lock)
                lock = None
            else:
                close_part(fd, part, failed)
            progress.finish(error)
            if progress.read_fd is not None:
                # Readers took their own descriptors; later ones open the stored file.
                os.close(progress.read_fd)
                progress.read_fd = None
            self._inflight.pop(target.key, None)
            if lock is not None:
                release_lock(*lock)

    def store(
        self, part: Path, fd: int, digest: str, target: Target, batched: bool
    ) -> tuple[StoredFile, bool]:
        """Make a verified download durable and move it into the store (blocking); whether a
        batch is due to be settled. Alone: an fsync. In a batch: its name in the journal."""
        journal = self._journal if batched else None
        if journal is None:
            os.fsync(fd)
        else:
            journal.admit(digest, target.filename)
        stored = self._storage.commit(part, digest, target.filename)
        if target.sha256 is None:
            self._storage.remember_hash(target.url, digest)
        return stored, journal is not None and journal.committed()

    def settle_soon(self) -> None:
        """Settle the batch in the background, one settle at a time."""
        journal = self._journal
        if journal is None or (self._settling is not None and not self._settling.done()):
            return
        self._settling = asyncio.create_task(anyio.to_thread.run_sync(journal.settle))

    async def settle(self) -> None:
        """Make every batched file stored so far durable (the end of a prefetch pass)."""
        if self._settling is not None:
            with contextlib.suppress(Exception):
                await self._settling
        if self._journal is not None:
            await anyio.to_thread.run_sync(self._journal.settle)

    async def _download(self, target: Target, progress: Download, fd: int) -> None:
        hasher = hashlib.sha256()
        loop = asyncio.get_running_loop()
        # Writing and hashing run in a worker thread, one batch behind the socket: both release
        # the GIL, so the event loop keeps receiving (and serving readers) meanwhile. Written
        # bytes are announced only once they are in the file, where readers pread them.
        pending: asyncio.Future[int] | None = None
        received = 0

        async def settle() -> None:
            nonlocal pending
            if pending is not None:
                progress.written += await pending
                pending = None
                progress.notify()

        try:
            async with self._upstream.stream_file(target.url) as response:
                header = response.headers.get("content-length", "")
                length = int(header) if header.isdigit() else None
                if target.size is not None and length is not None and length != target.size:
                    raise IntegrityError(
                        f"upstream sends {length} bytes for {target.filename}, "
                        f"index says {target.size}"
                    )
                progress.total = target.size if target.size is not None else length
                progress.set_ready()
                batch = bytearray()
                # Raw bytes, as pip reads them: the index's sha256 is of what is sent, and a
                # file answered with a Content-Encoding nobody asked for must not be inflated.
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if progress.total is not None and received > progress.total:
                        raise IntegrityError(
                            f"upstream sends more than the {progress.total} bytes of "
                            f"{target.filename}"
                        )
                    self._on_fetched(len(chunk))
                    batch += chunk
                    # The first bytes go at once (time to first byte), then whole batches.
                    if len(batch) >= CHUNK or (progress.written == 0 and pending is None):
                        await settle()
                        pending = loop.run_in_executor(None, _write_all, fd, hasher, batch)
                        batch = bytearray()
                await settle()
                if batch:
                    progress.written += await loop.run_in_executor(
                        None, _write_all, fd, hasher, batch
                    )
                    progress.notify()
        finally:
            if pending is not None:
                # The thread writes to ``fd``, which our caller closes next: never before the
                # write is over (a reused descriptor number would receive the bytes).
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await pending
        if progress.total is not None and progress.written != progress.total:
            raise IntegrityError(
                f"{redact(target.url)} ended after {progress.written} of {progress.total} bytes"
            )
        digest = hasher.hexdigest()
        if target.sha256 is not None and digest != target.sha256:
            raise IntegrityError(
                f"sha256 of {target.filename} is {digest}, index says {target.sha256}"
            )
        progress.sha256 = digest

    async def wait_all(self) -> None:
        """Let downloads under way finish (used at shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
