"""Advisory file locks (flock) shared by processes on one cache directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_held(path: Path) -> bool:
    """Whether some process (this one included, through another open file) holds ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock taken for the test
    return False


def take_lock(path: Path) -> int | None:
    """Take the exclusive lock at ``path`` without waiting: its descriptor, or None when another
    holder has it. Raises OSError when the lock file cannot be made (a full disk).

    Lock files are removed by their holder when done (see ``release_lock``), so a lock taken on
    a file that was unlinked meanwhile is worthless: check that the path still names the locked
    inode, and start again if not.
    """
    for _attempt in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            there = os.stat(path)
        except FileNotFoundError:
            there = None
        mine = os.fstat(fd)
        if there is not None and (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # the holder before us removed it: try the new file
    raise OSError(0, "lock file keeps changing")


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go: nothing piles up in tmp/."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class FileLock:
    """One exclusive lock file, taken without waiting (blocking calls: a worker thread)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def take(self) -> bool:
        """True once this object holds it; False when another holder has it."""
        if self._fd is None:
            self._fd = take_lock(self._path)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            release_lock(self._path, fd)

    def held(self) -> bool:
        """Whether some holder (this one included) has it now."""
        return lock_held(self._path)
