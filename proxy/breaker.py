"""Circuit breakers for the upstream, one per origin: when a host is plainly dead, stop making
every client wait for a timeout. After ``threshold`` consecutive failures the circuit opens and
requests fail at once (stale pages are served straight away); after ``reset_after`` seconds one
request is let through as a probe, and its outcome closes the circuit or opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        reset_after: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.opened_count = 0
        self._probing = False
        self._probe_started = 0.0

    def allow(self) -> bool:
        """Whether a request may go to the upstream now."""
        if self.threshold <= 0 or self.state == CLOSED:
            return True
        now = self._clock()
        waited = self.opened_at is not None and now - self.opened_at >= self.reset_after
        if self.state == OPEN and waited:
            self.state, self._probing = HALF_OPEN, False
        # One probe at a time; a probe that never reported (its client went away) is replaced.
        stuck = self._probing and now - self._probe_started >= self.reset_after
        if self.state == HALF_OPEN and (not self._probing or stuck):
            self._probing, self._probe_started = True, now
            return True
        return False

    def success(self) -> None:
        self.state, self.failures, self.opened_at, self._probing = CLOSED, 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.threshold > 0 and (self.state == HALF_OPEN or self.failures >= self.threshold):
            if self.state != OPEN:
                self.opened_count += 1
            self.state, self.opened_at, self._probing = OPEN, self._clock(), False

    def snapshot(self) -> dict[str, Any]:
        retry_in = None
        if self.state == OPEN and self.opened_at is not None:
            retry_in = max(0.0, round(self.reset_after - (self._clock() - self.opened_at), 1))
        return {
            "circuit": self.state,
            "consecutive_failures": self.failures,
            "times_opened": self.opened_count,
            "probe_in_seconds": retry_in,
        }


class Breakers:
    """One breaker per origin (scheme://host:port), so that a failing file host never opens the
    circuit for the index, nor the index for a healthy file host.

    ``snapshot()`` keeps the shape /stats has always shown (the index's own breaker at the top)
    and lists the other origins under ``origins``. At most ``limit`` origins are remembered;
    closed ones are forgotten first, as they hold nothing worth keeping.
    """

    def __init__(
        self,
        primary: str,
        threshold: int = 5,
        reset_after: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 256,
    ) -> None:
        self.primary = primary
        self._threshold, self._reset_after, self._clock = threshold, reset_after, clock
        self._limit = limit
        self._by_origin: dict[str, CircuitBreaker] = {primary: self._make()}

    def _make(self) -> CircuitBreaker:
        return CircuitBreaker(self._threshold, self._reset_after, self._clock)

    def for_origin(self, origin: str) -> CircuitBreaker:
        breaker = self._by_origin.get(origin)
        if breaker is None:
            if len(self._by_origin) >= self._limit:
                self._forget_one()
            breaker = self._by_origin[origin] = self._make()
        return breaker

    def _forget_one(self) -> None:
        others = [o for o in self._by_origin if o != self.primary]
        closed = [o for o in others if self._by_origin[o].state == CLOSED]
        victim = (closed or others)[0]
        del self._by_origin[victim]

    def snapshot(self) -> dict[str, Any]:
        data = self._by_origin[self.primary].snapshot()
        data["origins"] = [
            {"origin": origin, **breaker.snapshot()}
            for origin, breaker in self._by_origin.items()
            if origin != self.primary
        ]
        return data
