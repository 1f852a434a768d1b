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

from proxy.errors import IntegrityError, NotFound, UpstreamUnavailable
from proxy.evict import LOW_WATER
from proxy.filestore import StoredFile
from proxy.follow import KEEP_VERIFIED, Download, RemoteDownload, verified_name
from proxy.locks import release_lock, take_lock
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


def _open_stored(stored: StoredFile) -> int | None:
    """A descriptor on a stored file on this machine; None when it went meanwhile."""
    if stored.path is None:
        return None
    try:
        return os.open(stored.path, os.O_RDONLY)
    except FileNotFoundError:
        return None


class StoredDownload(Download):
    """A download that ended before it began: the file is stored and verified, and already
    open, so eviction in the meantime cannot take it from this one reader."""

    def __init__(self, stored: StoredFile, fd: int, target: Target) -> None:
        super().__init__(total=target.size)
        self.expected = target.sha256
        self.final, self.sha256 = stored.path, stored.sha256
        self._fd: int | None = fd
        self.written = os.fstat(fd).st_size
        self.finish(None)

    def take_source(self) -> int | None:
        return self.open_source()

    def open_source(self) -> int:
        if self._fd is None:
            return super().open_source()
        fd, self._fd = self._fd, None
        return fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._inflight: dict[str, Download] = {}
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
        if self._too_big(target.size, pinned):
            # Not stored, so there is nothing for other processes to share: no lock.
            return self._begin(target, None, pinned)
        lock_path = self._storage.lock_path(target.key)
        try:
            lock_fd = take_lock(lock_path)
        except OSError as exc:  # a full disk, for one: a clean failure for this request
            failed = Download(total=target.size)
            failed.finish(f"cannot start a download: {exc.strerror}")
            return failed
        if lock_fd is None:
            log.debug("following another worker's download of %s", target.filename)
            follower = RemoteDownload(
                lock_path, self._final(target), target.size, self._remote_timeout
            )
            follower.expected = target.sha256
            return follower
        stored = self._final(target)()
        if stored is not None:
            # Stored by a download that ended between this request's look-up and now: never
            # download it again (a second copy renamed over the first would cut the readers
            # in other workers that follow the first). Evicted again meanwhile: download it.
            fd = _open_stored(stored)
            if fd is not None:
                release_lock(lock_path, lock_fd)
                return StoredDownload(stored, fd, target)
        return self._begin(target, (lock_path, lock_fd), pinned)

    def _begin(self, target: Target, lock: tuple[Path, int] | None, pinned: bool) -> Download:
        part = self._storage.part_path(target.key, ".part")
        progress = Download(part, target.size)
        progress.expected = target.sha256
        try:
            # Opened now, not in the task: a reader that joins before the task runs can take
            # its own descriptor at once (see Download.take_source).
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            progress.read_fd = os.open(part, os.O_RDONLY)
        except OSError as exc:  # a full disk, for one: a clean failure for this request
            if lock is not None:
                release_lock(*lock)
            with contextlib.suppress(OSError):
                os.unlink(part)
            progress.finish(f"cannot start a download: {exc.strerror}")
            return progress
        self._inflight[target.key] = progress
        task = asyncio.create_task(self._run(target, progress, lock, pinned, fd))
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
                await anyio.to_thread.run_sync(os.fsync, fd)
                stored = await anyio.to_thread.run_sync(
                    self._storage.commit, part, digest, target.filename
                )
                if target.sha256 is None:
                    await anyio.to_thread.run_sync(self._storage.remember_hash, target.url, digest)
                progress.final = stored.path
                self._on_committed(stored)
                log.info(
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
            if fd >= 0:
                os.close(fd)
            if error is not None or progress.final is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            progress.finish(error)
            if progress.read_fd is not None:
                # Readers took their own descriptors; later ones open the stored file.
                os.close(progress.read_fd)
                progress.read_fd = None
            self._inflight.pop(target.key, None)
            if lock is not None:
                release_lock(*lock)

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
