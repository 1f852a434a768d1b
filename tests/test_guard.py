"""The connection limits' arithmetic (the behaviour is tested on a real server in
test_connections.py)."""

from __future__ import annotations

import pytest

from proxy.web.guard import ConnectionLimits


@pytest.mark.parametrize(
    ("open_files", "cap", "overflow"),
    [
        (None, 1000, 16),  # unlimited: as configured
        (1024, 768, 32),  # the common default: a quarter kept for files, sockets, the cache
        (256, 192, 8),
        (64, 1, 4),  # too few to share: still one connection
        (1_048_576, 1000, 125),
    ],
)
def test_guard__cap_fits_open_file_limit(open_files: int | None, cap: int, overflow: int) -> None:
    fitted = ConnectionLimits().fitted(open_files)
    assert (fitted.max_connections, fitted.overflow) == (cap, overflow)


def test_guard__overflow_never_beyond_an_eighth_of_a_small_cap() -> None:
    fitted = ConnectionLimits(max_connections=3).fitted(20_000)
    assert (fitted.max_connections, fitted.overflow) == (3, 4)
