"""The last warnings and errors this process logged, kept (bounded) for the status page."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ERRORS_KEPT = 20
_LINE_MAX = 300


class ErrorRing(logging.Handler):
    """The last warnings and errors this process logged, for the status page (bounded)."""

    def __init__(self, size: int = ERRORS_KEPT) -> None:
        super().__init__(logging.WARNING)
        self._lines: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        self._lines.append(
            {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": message[:_LINE_MAX],
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self._lines))


@contextmanager
def keep_errors(size: int = ERRORS_KEPT) -> Iterator[ErrorRing]:
    """An ErrorRing on the root logger for as long as the server runs."""
    ring = ErrorRing(size)
    root = logging.getLogger()
    root.addHandler(ring)
    try:
        yield ring
    finally:
        root.removeHandler(ring)
