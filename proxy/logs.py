"""Logging setup, shared by the command line and worker processes (which start with none).

Two formats on stderr: ``text`` (a time, the level, the logger, the message) and ``json`` for
log shippers, one object per line with ``time``, ``level``, ``logger``, ``message`` and the
record's extra fields (an access line's status and bytes, an upstream fetch's ``ms``). No URL
reaches a log line with its credentials: the modules that log one redact it first, and httpx,
which logs whole request URLs, is kept to warnings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")

# What every LogRecord carries; anything else on a record came in through ``extra=``.
# uvicorn's color_message is its message again, with terminal colours.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class _QuietAbort(logging.Filter):
    """A transfer cut short on purpose is logged by us, not as a crash: bad upstream bytes
    (known by a marker, not by importing the core: logging setup depends on nothing), and a
    request cancelled at shutdown (the server logs how many it cut)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            return False
        return not getattr(exc, "quiet_abort", False)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message stay escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: str, log_format: str = "text") -> None:
    root = logging.getLogger()
    if not root.handlers:  # as basicConfig: a host that set up logging (pytest) keeps its own
        ours = logging.StreamHandler(sys.stderr)
        ours.set_name("pypi-proxy")
        root.addHandler(ours)
    for handler in root.handlers:
        if handler.get_name() == "pypi-proxy":
            handler.setFormatter(formatter(log_format))
    root.setLevel(level.upper())
    # httpx logs full request URLs, which may carry the upstream's credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAbort) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(_QuietAbort())
