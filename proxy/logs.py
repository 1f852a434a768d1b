"""Logging setup, shared by the command line and worker processes (which start with none)."""

from __future__ import annotations

import logging
import sys


class _QuietAbort(logging.Filter):
    """A transfer cut short on purpose (bad upstream bytes) is logged by us, not as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Known by a marker, not by importing the core: logging setup depends on nothing.
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, "quiet_abort", False)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs full request URLs, which may carry the upstream's credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").addFilter(_QuietAbort())
