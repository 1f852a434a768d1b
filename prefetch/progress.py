"""A prefetch pass's progress: a bar on a terminal, a log line now and then otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("prefetch")
LOG_EVERY = 10.0


class PassProgress:
    def __init__(self, total: int, *, stream: TextIO | None = None, tty: bool | None = None):
        self.total = total
        self.done = 0
        self.failed = 0
        self.files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        # A line is due LOG_EVERY seconds after the start (not after boot: monotonic time is
        # large, so 0.0 made the first event log at once and finish() log it again), and
        # finish() writes one only for what no line has shown yet.
        self._last = self.started
        self._shown = -1

    def advance(self, *, files: int = 0, size: int = 0, failed: bool = False) -> None:
        self.done += 1
        self.failed += failed
        self.files += files
        self.bytes += size
        self._show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.done}/{self.total} projects, {self.files} files, "
            f"{self.bytes / 1024**2:.1f} MB, {self.done / elapsed:.1f} projects/s"
            + (f", {self.failed} failed" if self.failed else "")
        )

    def _show(self, final: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            if final or now - self._last > 0.1:
                width = 30
                filled = int(width * self.done / self.total) if self.total else width
                bar = "#" * filled + "." * (width - filled)
                self._stream.write(f"\r[{bar}] {self.line()}\x1b[K")
                self._stream.flush()
                self._last = now
        elif (final and self._shown != self.done) or now - self._last > LOG_EVERY:
            log.info("%s", self.line())
            self._last = now
            self._shown = self.done

    def finish(self) -> None:
        self._show(final=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
