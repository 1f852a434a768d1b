"""Seeing what other processes changed: each page in memory is compared with its project's
generation counter in the cache (``Storage.generation``) at most once every CHECK_EVERY
seconds, so a change made anywhere is served everywhere within about a second while a hot page
costs no disk read per request. A files generation does the same for offline views, which
depend on which files are on disk.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable

import diskcache

from proxy.storage import Storage

CHECK_EVERY = 1.0  # seconds between reads of one counter
_UNREADABLE = (OSError, sqlite3.Error, diskcache.Timeout)


class Generations:
    def __init__(
        self,
        storage: Storage,
        in_memory: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._in_memory = in_memory  # how many pages are in memory: bounds what is kept here
        self._clock = clock
        # Per project: when its generation was last read, and the value then.
        self._seen: dict[str, tuple[float, int]] = {}
        self._files_seen = (-CHECK_EVERY, 0)

    def unchanged(self, project: str) -> bool:
        """Whether the copy in memory of ``project`` (seen with ``saw``) is still current."""
        now = self._clock()
        seen = self._seen.get(project)
        if seen is not None and now - seen[0] < CHECK_EVERY:
            return True
        try:
            generation = self._storage.generation(project)
        except _UNREADABLE:
            # The cache cannot be read just now: keep serving the copy in memory (if any) and
            # look again in a second, rather than fail the request.
            if seen is not None:
                self._seen[project] = (now, seen[1])
            return seen is not None
        if seen is not None and seen[1] == generation:
            self._seen[project] = (now, generation)
            return True
        self._seen.pop(project, None)
        return False

    def saw(self, project: str, generation: int) -> None:
        """A copy of ``project`` at ``generation`` (read before the copy was) is in memory."""
        if len(self._seen) > 4 * max(self._in_memory(), 1000):
            self._seen.clear()  # unknown projects are read again, never served unchecked
        self._seen[project] = (self._clock(), generation)

    def forget(self, project: str) -> None:
        self._seen.pop(project, None)

    def files(self) -> int:
        """The files generation, read at most once every CHECK_EVERY seconds."""
        checked_at, generation = self._files_seen
        now = self._clock()
        if now - checked_at >= CHECK_EVERY:
            with contextlib.suppress(*_UNREADABLE):
                generation = self._storage.files_generation()
            self._files_seen = (now, generation)
        return generation
