"""One fetch for many askers: while a key's call is under way, whoever else asks for the same
key waits for its result (or its error) instead of starting another."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedCalls:
    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once for all concurrent callers asking for ``key``."""
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            try:
                result = await make()
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters may be none
                raise
            else:
                future.set_result(result)
                return result
            finally:
                del self._inflight[key]
        result = await asyncio.shield(future)
        return result
