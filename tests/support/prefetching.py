"""Running prefetch passes in the test process."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import anyio

from prefetch.runner import PassResult, Prefetcher, state_path
from prefetch.state import PrefetchState
from proxy.runtime import Runtime
from proxy.settings import Settings


def run_pass(settings: Settings, projects: Sequence[str] | None = None) -> PassResult:
    async def main() -> PassResult:
        runtime = await Runtime.open(settings)
        state = PrefetchState(state_path(runtime.mirror))
        try:
            return await Prefetcher(runtime, state).run(projects, progress_tty=False)
        finally:
            state.close()
            await runtime.close()

    return anyio.run(main)


# Where the prefetcher's files have always been in a cache directory (one an earlier version
# wrote keeps working): tests name the layout; the prefetcher asks the mirror.
def prefetch_db(cache_dir: Path) -> Path:
    return cache_dir / "state" / "prefetch.sqlite"


def prefetch_lock(cache_dir: Path) -> Path:
    return cache_dir / "state" / "prefetch.lock"


def stored(cache_dir: Path) -> dict[str, str]:
    """filename -> sha256 directory of every file in the cache."""
    return {p.name: p.parent.name for p in (cache_dir / "files").rglob("*") if p.is_file()}


def all_whole(cache_dir: Path) -> bool:
    """Every stored file's bytes hash to the name of its directory."""
    for path in (cache_dir / "files").rglob("*"):
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != path.parent.name:
            return False
    return True
