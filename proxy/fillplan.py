"""How a download begins, on the file system (blocking, so that the prefetcher can run it in a
worker thread; see ``Filler.start_off_loop``): follow another process's download, take the file
stored meanwhile, or take the lock and open the temporary file. Part of ``proxy.fill``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.filestore import StoredFile
from proxy.follow import Download
from proxy.locks import release_lock, take_lock
from proxy.storage import Storage


@dataclass(slots=True)
class Plan:
    """What ``prepare`` found: exactly one of error, follow, stored, or fds (begin)."""

    error: str | None = None
    follow: Path | None = None  # another process's lock: follow its download
    stored: tuple[StoredFile, int] | None = None  # stored meanwhile, and open
    part: Path | None = None
    fds: tuple[int, int] | None = None  # the temporary file, for writing and for reading
    lock: tuple[Path, int] | None = None


def prepare(
    storage: Storage, key: str, unstored: bool, find: Callable[[], StoredFile | None]
) -> Plan:
    """The plan for a download of ``key``; ``unstored``: too big to store, streamed only;
    ``find`` gives the stored file, if one is."""
    if unstored:
        # Not stored, so there is nothing for other processes to share: no lock.
        return open_part(storage, key, None)
    lock_path = storage.lock_path(key)
    try:
        lock_fd = take_lock(lock_path)
    except OSError as exc:  # a full disk, for one: a clean failure for this request
        return Plan(error=f"cannot start a download: {exc.strerror}")
    if lock_fd is None:
        return Plan(follow=lock_path)
    stored = find()
    if stored is not None:
        # Stored by a download that ended between this request's look-up and now: never
        # download it again (a second copy renamed over the first would cut the readers
        # in other workers that follow the first). Evicted again meanwhile: download it.
        fd = _open_stored(stored)
        if fd is not None:
            release_lock(lock_path, lock_fd)
            return Plan(stored=(stored, fd))
    return open_part(storage, key, (lock_path, lock_fd))


def open_part(storage: Storage, key: str, lock: tuple[Path, int] | None) -> Plan:
    part = storage.part_path(key, ".part")
    try:
        # Opened now, not in the task: a reader that joins before the task runs can take
        # its own descriptor at once (see Download.take_source).
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        read_fd = os.open(part, os.O_RDONLY)
    except OSError as exc:  # a full disk, for one: a clean failure for this request
        if lock is not None:
            release_lock(*lock)
        with contextlib.suppress(OSError):
            os.unlink(part)
        return Plan(error=f"cannot start a download: {exc.strerror}", part=part)
    return Plan(part=part, fds=(fd, read_fd), lock=lock)


def close_part(fd: int, part: Path, failed: bool) -> None:
    """The download's end: its descriptor closed, its temporary file gone if not stored."""
    if fd >= 0:
        os.close(fd)
    if failed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)


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

    def __init__(self, stored: StoredFile, fd: int, size: int | None, sha256: str | None) -> None:
        super().__init__(total=size)
        self.expected = sha256
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
