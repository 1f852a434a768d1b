"""``pypi-proxy prefetch``: one pass; exit 0 once the mirror matches the upstream's serial."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from prefetch.runner import AlreadyRunning, Prefetcher, state_path
from prefetch.state import PrefetchState
from proxy.runtime import Runtime
from proxy.settings import Settings

EXIT_FAILED = 1
EXIT_BUSY = 3


def run(settings: Settings, projects: Sequence[str]) -> int:
    if settings.offline:
        print("pypi-proxy: prefetch needs the upstream; it cannot run offline", file=sys.stderr)
        return EXIT_FAILED

    async def main() -> int:
        runtime = await Runtime.open(settings)
        state = await anyio.to_thread.run_sync(PrefetchState, state_path(runtime.mirror))
        try:
            result = await Prefetcher(runtime, state).run(projects or None)
        except AlreadyRunning as exc:
            print(f"pypi-proxy: {exc}", file=sys.stderr)
            return EXIT_BUSY
        finally:
            state.close()
            await runtime.close()
        if result.ok:
            print(result.message())
            return 0
        if result.method:
            print(f"pypi-proxy: prefetch incomplete: {result.message()}", file=sys.stderr)
        for line in result.errors[-10:]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED

    return anyio.run(main, backend_options=loop_options())


def loop_options() -> dict[str, object]:
    """uvloop where it is installed (uvicorn's standard extra brings it, as for ``serve``): a
    pass is thousands of small requests, and the event loop's own cost per request halves."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
