"""Durability per batch, not per file: what a prefetch pass stores is made durable with one
filesystem sync per batch instead of an ``fsync`` per file, without giving up "whole or absent"
after a crash (power loss included, where a renamed file may keep its name and lose its bytes).

    journal = BatchJournal(directory)   one per process; its current journal file is flock'ed
    journal.admit(sha256, filename)     blocking, before the file's rename into the store: the
                                        name is appended to the journal and on disk (one fsync
                                        shared by every file admitted meanwhile: group commit)
    journal.committed() -> due          after the rename: whether a batch is due
    journal.settle()                    blocking: sync the filesystem (every byte written so
                                        far, the admitted files' among them), then delete the
                                        journal that named them
    recover(directory, check) -> dropped  at start: every file named in a journal nobody holds
                                        (its writer died before settling) is hashed again by
                                        ``check``, which drops a copy whose bytes are wrong

A file's bytes are written (and hashed) before it is admitted, so the sync that settles a
journal covers every file it names; a name whose rename was lost is simply absent.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from proxy.localstore import LocalFileStore
from proxy.storage import Storage

log = logging.getLogger(__name__)

BATCH_FILES = 256  # files per batch: a crash re-hashes at most about this many
BATCH_SECONDS = 1.0  # and at most this old

_libc: ctypes.CDLL | None = None


def _syncfs(fd: int) -> None:
    """Flush the filesystem holding ``fd`` (Linux's syncfs); elsewhere, every filesystem."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


class _Journal:
    """One journal file: names appended, how far they are on disk, admits still under way."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.journal"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # held while it lives: recover() leaves it alone
        # Its name must survive a crash as surely as what it names.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.written = 0  # entries appended
        self.durable = 0  # entries known on disk
        self.syncing = False
        self.pending = 0  # admits that have not returned yet


class BatchJournal:
    def __init__(
        self, directory: Path, files: int = BATCH_FILES, seconds: float = BATCH_SECONDS
    ) -> None:
        self._directory = directory
        self._files, self._seconds = files, seconds
        self._cond = threading.Condition()
        self._settling = threading.Lock()
        self._journal: _Journal | None = None
        self._committed = 0
        self._since = time.monotonic()

    def admit(self, sha256: str, filename: str) -> None:
        """Name a file about to be renamed into the store, on disk before this returns."""
        with self._cond:
            if self._journal is None:
                self._journal = _Journal(self._directory)
            journal = self._journal
            os.write(journal.fd, f"{sha256} {filename}\n".encode())
            journal.written += 1
            mine = journal.written
            journal.pending += 1
        try:
            self._durable(journal, mine)
        finally:
            with self._cond:
                journal.pending -= 1
                self._cond.notify_all()

    def _durable(self, journal: _Journal, mine: int) -> None:
        # Group commit: one fsync covers every entry appended before it started; an admit that
        # finds one under way waits for it, then starts the next if its entry is not covered.
        with self._cond:
            while journal.durable < mine:
                if journal.syncing:
                    self._cond.wait()
                    continue
                journal.syncing = True
                upto = journal.written
                self._cond.release()
                try:
                    os.fsync(journal.fd)
                except BaseException:
                    self._cond.acquire()
                    journal.syncing = False
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                journal.syncing = False
                journal.durable = max(journal.durable, upto)
                self._cond.notify_all()

    def committed(self) -> bool:
        """One admitted file is in place; True when a batch is due to be settled."""
        with self._cond:
            self._committed += 1
            return self._committed >= self._files or time.monotonic() - self._since >= self._seconds

    def settle(self) -> None:
        """Make every file admitted so far durable (one filesystem sync), then forget them."""
        with self._settling:
            with self._cond:
                journal, self._journal = self._journal, None  # later admits start a new one
                self._committed = 0
                self._since = time.monotonic()
                if journal is None:
                    return
                while journal.pending:
                    self._cond.wait()
            try:
                _syncfs(journal.fd)
            except OSError as exc:  # kept, for recover() to check its files after a restart
                log.warning("could not sync the files stored: %s", exc)
                os.close(journal.fd)
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal.path)
            os.close(journal.fd)


def batch_journal(storage: Storage, directory: Path) -> BatchJournal | None:
    """The journal of a store on this machine's disk; None for a bucket, whose uploads keep
    their own guarantees (and where a filesystem sync would not reach)."""
    return BatchJournal(directory) if isinstance(storage.files, LocalFileStore) else None


def recover(directory: Path, check: Callable[[str, str], bool]) -> int:
    """Check the files named in journals whose writer died before settling them; ``check``
    (sha256, filename) hashes a stored copy and drops it when its bytes are wrong, returning
    True then. How many were dropped. Journals still held by a live process are left alone."""
    if not directory.is_dir():
        return 0
    dropped = 0
    for path in sorted(directory.glob("*.journal")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            with os.fdopen(os.dup(fd), "rb") as f:
                names = {tuple(line.decode().split(" ", 1)) for line in f if line.endswith(b"\n")}
            for entry in sorted(names):
                if len(entry) == 2 and check(entry[0], entry[1].rstrip("\n")):
                    dropped += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)
    return dropped
