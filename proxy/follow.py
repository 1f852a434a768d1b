"""Reading a download while it grows: what readers see of one fill, in this process or in
another worker, and the rule that keeps them honest.

A reader gets its own descriptor on the download's temporary file (one inode), so a rename into
``files/`` or a later download cannot change what it reads. It never gets the last byte before
the fill was verified, and it hashes what it sends itself, so no interleaving of writers can
complete a client's transfer of wrong bytes: the transfer is cut instead.

A follower in another worker process opens the writer's temporary file (named inside the lock
file) and completes only when that very inode is the one renamed into ``files/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from proxy.errors import FillFailed
from proxy.filestore import StoredFile
from proxy.locks import lock_held

READ_CHUNK = 256 * 1024  # what one reader holds at a time: a slow client costs little memory
REMOTE_POLL = 0.02
# A verified download that is not stored (too big for the cache) stays this long under its
# verified name, for followers in other workers to see that their bytes were good.
KEEP_VERIFIED = 30.0


def verified_name(part: Path) -> Path:
    return part.with_name(part.name + ".ok")


class Download:
    """What readers see of one download run by this process: bytes written so far, whether it
    ended, and how. It is tied to one temporary file (one inode): readers get their own
    descriptor on it, so a rename into ``files/`` or a later download cannot change what they
    read."""

    def __init__(self, part: Path | None = None, total: int | None = None) -> None:
        self.part = part
        self.total = total
        self.expected: str | None = None  # the sha256 the bytes must have, when known
        self.written = 0
        self.done = False
        # The whole file arrived and matched its sha256; storing it (fsync, rename) may still
        # be under way, and may yet fail, but readers can end their transfer: the bytes are
        # good whatever happens to the copy.
        self.verified = False
        self.error: str | None = None
        self.final: Path | None = None
        self.sha256: str | None = None
        self.not_found = False
        # The upstream failed on the way (a transport error, a 5xx): no verdict on the file.
        self.upstream_failed = False
        self.read_fd: int | None = None  # open while the download runs
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

    def open_source(self) -> int:
        """A descriptor the caller owns on this download's bytes."""
        if self.done and self.error:
            raise FillFailed(self.error)
        if self.read_fd is not None:
            return os.dup(self.read_fd)
        if self.done and self.final is not None:
            try:
                return os.open(self.final, os.O_RDONLY)
            except FileNotFoundError:
                raise FillFailed("the stored file was removed before it could be read") from None
        raise FillFailed(self.error or "no download")

    def take_source(self) -> int | None:
        """A descriptor now, without waiting, where one can be had (a download run by this
        process), so that a file evicted just after it is stored cannot fail the reader."""
        return self.open_source()

    def release(self) -> None:
        """The reader is finished with this download (followers hold a descriptor of their own)."""


class RemoteDownload(Download):
    """A download run by another worker process, followed through its temporary file.

    The follower opens that file once and keeps the descriptor, so it follows one inode. It
    completes only when that very inode is the one renamed into ``files/`` (the writer renames
    only after the sha256 matched). A download that failed (its file unlinked), was replaced by
    a later one, or whose writer died, fails the follower's transfer instead.
    """

    def __init__(
        self,
        lock_path: Path,
        final_of: Callable[[], StoredFile | None],
        total: int | None,
        timeout: float,
    ) -> None:
        super().__init__(total=total)
        self._lock_path = lock_path
        self._final_of = final_of
        self._timeout = timeout
        self._fd: int | None = None

    def _open_final(self) -> bool:
        stored = self._final_of()
        if stored is None or stored.path is None:
            return False
        try:
            self._fd = os.open(stored.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        self.final, self.written = stored.path, os.fstat(self._fd).st_size
        self.sha256 = stored.sha256
        self.finish(None)
        return True

    async def wait_ready(self) -> None:
        if self._fd is not None or self.done:
            return  # already following (callers may ask twice)
        deadline = time.monotonic() + self._timeout
        while True:
            if self._open_final():
                return
            try:
                name = self._lock_path.read_text(errors="replace").strip()
            except FileNotFoundError:
                name = ""
            if name:
                try:
                    self._fd = os.open(self._lock_path.parent / name, os.O_RDONLY)
                except FileNotFoundError:
                    pass  # renamed into place or discarded just now: look again
                else:
                    self.part = self._lock_path.parent / name
                    self.written = os.fstat(self._fd).st_size
                    return
            if not lock_held(self._lock_path) or time.monotonic() > deadline:
                if not self._open_final():
                    self.finish("the other worker's download ended without a file")
                return
            await asyncio.sleep(REMOTE_POLL)

    async def refresh(self) -> None:
        await asyncio.sleep(REMOTE_POLL)
        if self._fd is None or self.done:
            return
        mine = os.fstat(self._fd)
        self.written = mine.st_size
        stored = self._final_of()
        if stored is not None and stored.path is not None:
            try:
                there = os.stat(stored.path)
            except FileNotFoundError:
                there = None
            if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                # The size read above may predate the last write (it came just before the
                # rename): the whole file is what the renamed inode holds now.
                self.written = os.fstat(self._fd).st_size
                self.final, self.sha256 = stored.path, stored.sha256
                self.finish(None)
                return
            if there is not None:
                self._end_whole_or("another download was stored instead of the one followed")
                return
        if self.part is not None:
            try:
                verified = os.stat(verified_name(self.part))
            except FileNotFoundError:
                verified = None
            if verified is not None and (verified.st_dev, verified.st_ino) == (
                mine.st_dev,
                mine.st_ino,
            ):
                self.written = os.fstat(self._fd).st_size
                self.finish(None)  # verified and streamed, not stored: the bytes are good
                return
        if mine.st_nlink == 0:
            self._end_whole_or("the other worker's download failed")
        elif not lock_held(self._lock_path):
            self._end_whole_or("the other worker's download stopped")

    def _end_whole_or(self, error: str) -> None:
        """The followed download ended without the sign that its file was stored (unlinked:
        stored and evicted at once; the lock gone and another copy, or none, in the store:
        replicas and local copies race). If our descriptor holds the whole file and the
        page's sha256 is known, the reader ends only on that digest of what it read, so let
        it decide; else the transfer fails with ``error``."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if self.expected is not None and self.total is not None and size == self.total:
            self.written = size
            self.finish(None)
        else:
            self.finish(error)

    def open_source(self) -> int:
        if self.done and self.error:
            raise FillFailed(self.error)
        if self._fd is None:
            raise FillFailed("no download to follow")
        return os.dup(self._fd)

    def take_source(self) -> int | None:
        return None  # opened by wait_ready, which follows the other worker's file

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def read_download(download: Download, fd: int | None = None) -> AsyncIterator[bytes]:
    """Yield the bytes of a fill as they arrive, holding back the last one until verified.

    Belt and braces: the reader also hashes what it sends, and sends the last byte only when
    that digest is the expected one, so no interleaving of writers can complete a transfer
    of wrong bytes.
    """
    try:
        await download.wait_ready()
        if fd is None:
            fd = download.open_source()
        try:
            digest = hashlib.sha256()
            pos = 0
            while True:
                if download.verified:
                    done, error = True, None
                else:
                    done, error = download.done, download.error
                if done and error:
                    raise FillFailed(error)
                # Never past the size the index gives: an upstream that sends more must not
                # let a read end exactly there and look like a whole transfer.
                available = download.written
                if download.total is not None:
                    available = min(available, download.total)
                limit = available if done else available - 1
                if pos < limit:
                    chunk = os.pread(fd, min(READ_CHUNK, limit - pos), pos)
                    if not chunk:
                        raise FillFailed("temporary file shrank")
                    pos += len(chunk)
                    digest.update(chunk)
                    if done and pos == limit:
                        _check_whole(download, digest.hexdigest(), pos)
                    yield chunk
                    continue
                if done:
                    if pos == 0:
                        _check_whole(download, digest.hexdigest(), pos)
                    return
                await download.refresh()
        finally:
            os.close(fd)
            fd = None
    finally:
        if fd is not None:  # given, but the wait ended in an error
            os.close(fd)
        download.release()


def _check_whole(download: Download, digest: str, length: int) -> None:
    expected = download.expected or download.sha256
    if expected is None or digest != expected:
        raise FillFailed("the bytes read do not match the index's sha256")
    if download.total is not None and length != download.total:
        raise FillFailed(f"read {length} bytes, expected {download.total}")


async def wait_done(download: Download) -> None:
    """Wait until a fill ended (either way); readers are not needed for it to go on."""
    try:
        await download.wait_ready()
        while not download.done:
            await download.refresh()
    finally:
        download.release()
