"""Filling the cache with one file: a single upstream download that any number of clients read
while it grows.

The download runs as its own task, so a client that goes away does not stop it. It writes to a
temporary file under ``tmp/`` while hashing; the file is renamed into ``files/`` only when its
length and sha256 match the index. Readers never get the last byte before that check passes, so
a client can never complete a transfer of wrong bytes: on a mismatch its connection is cut short.

Across worker processes, an exclusive ``flock`` on ``tmp/<key>.lock`` elects one downloader; the
others follow its temporary file (named inside the lock file) by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from proxy.errors import IntegrityError, NotFound, UpstreamUnavailable
from proxy.locks import lock_held
from proxy.storage import Storage
from proxy.upstream import Upstream, redact

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
REMOTE_POLL = 0.02


class FillFailed(Exception):
    """The download did not produce verified bytes; readers must abort their transfer."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    filename: str  # as stored: the distribution's filename, plus ".metadata" for PEP 658 files
    sha256: str | None
    size: int | None

    @property
    def key(self) -> str:
        return self.sha256 or hashlib.sha256(self.url.encode()).hexdigest()


class Progress:
    """What readers see of a fill: bytes written so far, whether it ended, and how."""

    def __init__(self, part: Path | None = None, total: int | None = None) -> None:
        self.part = part
        self.total = total
        self.written = 0
        self.done = False
        self.error: str | None = None
        self.final: Path | None = None
        self.sha256: str | None = None
        self.not_found = False
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def set_ready(self) -> None:
        self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def refresh(self) -> None:
        """Wait for news (in-process fills are pushed, not polled)."""
        await self._changed.wait()

    def finish(self, error: str | None) -> None:
        self.done, self.error = True, error
        self._ready.set()
        self.notify()


class RemoteProgress(Progress):
    """A fill run by another worker process, followed through its files and lock."""

    def __init__(
        self,
        lock_path: Path,
        final_of: Callable[[str | None], Path | None],
        total: int | None,
        timeout: float,
    ) -> None:
        super().__init__(total=total)
        self._lock_path = lock_path
        self._final_of = final_of
        self._timeout = timeout
        self._fd: int | None = None

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            final = self._final_of(None)
            if final is not None:
                self.final, self.done = final, True
                self.written = final.stat().st_size
                return
            name = self._lock_path.read_text(errors="replace").strip()
            if name and (self._lock_path.parent / name).exists():
                self.part = self._lock_path.parent / name
                return
            if not lock_held(self._lock_path) or time.monotonic() > deadline:
                self.finish("the other worker's download ended without a file")
                return
            await asyncio.sleep(REMOTE_POLL)

    async def refresh(self) -> None:
        await asyncio.sleep(REMOTE_POLL)
        if self.part is not None:
            with contextlib.suppress(FileNotFoundError):
                self.written = self.part.stat().st_size
        final = self._final_of(None)
        if final is not None:
            self.final = final
            self.written = final.stat().st_size
            self.done = True
        elif not lock_held(self._lock_path):
            final = self._final_of(None)
            if final is None:
                self.finish("the other worker's download failed")


async def read_progress(progress: Progress) -> AsyncIterator[bytes]:
    """Yield the bytes of a fill as they arrive, holding back the last one until verified."""
    await progress.wait_ready()
    if progress.done and progress.error:
        raise FillFailed(progress.error)
    source = progress.final if progress.done and progress.final else progress.part
    if source is None:
        raise FillFailed(progress.error or "no download")
    fd = os.open(source, os.O_RDONLY)
    try:
        pos = 0
        while True:
            done, error = progress.done, progress.error
            if done and error:
                raise FillFailed(error)
            limit = progress.written if done else progress.written - 1
            if pos < limit:
                chunk = os.pread(fd, min(CHUNK, limit - pos), pos)
                if not chunk:
                    raise FillFailed("temporary file shrank")
                pos += len(chunk)
                yield chunk
                continue
            if done:
                return
            await progress.refresh()
    finally:
        os.close(fd)


async def wait_done(progress: Progress) -> None:
    """Wait until a fill ended (either way); readers are not needed for it to go on."""
    await progress.wait_ready()
    while not progress.done:
        await progress.refresh()


class Filler:
    """Starts and shares downloads; one per process."""

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream,
        *,
        on_fetched: Callable[[int], None] = lambda n: None,
        on_corrupt: Callable[[], None] = lambda: None,
        on_committed: Callable[[Path, int], None] = lambda p, n: None,
        remote_timeout: float = 60.0,
    ) -> None:
        self._storage = storage
        self._upstream = upstream
        self._inflight: dict[str, Progress] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_fetched = on_fetched
        self._on_corrupt = on_corrupt
        self._on_committed = on_committed
        self._remote_timeout = remote_timeout

    def _final(self, target: Target) -> Callable[[str | None], Path | None]:
        def find(_: str | None) -> Path | None:
            sha = target.sha256 or self._storage.hash_for_url(target.url)
            if sha is None:
                return None
            path = self._storage.file_path(sha, target.filename)
            return path if path.exists() else None

        return find

    def start(self, target: Target) -> Progress:
        """The progress of the download of ``target``, joining one already under way."""
        existing = self._inflight.get(target.key)
        if existing is not None:
            return existing
        lock_path = self._storage.tmp_dir / f"{target.key}.lock"
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a full disk, for one: a clean failure for this request
            failed = Progress(total=target.size)
            failed.finish(f"cannot start a download: {exc.strerror}")
            return failed
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            log.debug("following another worker's download of %s", target.filename)
            return RemoteProgress(lock_path, self._final(target), target.size, self._remote_timeout)
        part = self._storage.tmp_dir / f"{target.key}.{os.getpid()}-{secrets.token_hex(4)}.part"
        progress = Progress(part, target.size)
        self._inflight[target.key] = progress
        task = asyncio.create_task(self._run(target, progress, lock_fd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return progress

    async def _run(self, target: Target, progress: Progress, lock_fd: int) -> None:
        assert progress.part is not None
        part = progress.part
        fd = -1
        error: str | None = None
        started = time.monotonic()
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, part.name.encode(), 0)
            await self._download(target, progress, fd)
            await anyio.to_thread.run_sync(os.fsync, fd)
            digest = progress.sha256
            assert digest is not None
            final = await anyio.to_thread.run_sync(
                self._storage.commit, part, digest, target.filename
            )
            if target.sha256 is None:
                await anyio.to_thread.run_sync(self._storage.remember_hash, target.url, digest)
            progress.final = final
            self._on_committed(final, progress.written)
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
            if error is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
            progress.finish(error)
            self._inflight.pop(target.key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(lock_fd, 0)
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    async def _download(self, target: Target, progress: Progress, fd: int) -> None:
        hasher = hashlib.sha256()
        async with self._upstream.stream_file(target.url) as response:
            header = response.headers.get("content-length", "")
            length = int(header) if header.isdigit() else None
            if target.size is not None and length is not None and length != target.size:
                raise IntegrityError(
                    f"upstream sends {length} bytes for {target.filename}, index says {target.size}"
                )
            progress.total = target.size if target.size is not None else length
            progress.set_ready()
            async for chunk in response.aiter_bytes(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                hasher.update(chunk)
                progress.written += len(chunk)
                self._on_fetched(len(chunk))
                progress.notify()
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
