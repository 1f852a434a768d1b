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
