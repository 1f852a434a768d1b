"""Stopping the way an operator expects: SIGTERM or Ctrl-C stops accepting, lets the running
transfers finish for up to ``shutdown_grace`` seconds, then cuts what is left, and the process
exits 0 with no traceback.

uvicorn's own server raises the signal again once it has shut down (a Ctrl-C then ends in a
``KeyboardInterrupt`` traceback, SIGTERM in death by signal), cancels overdue requests so that
each prints an "Exception in ASGI application" ``CancelledError`` traceback, and on a second
Ctrl-C skips the application's shutdown. Here a signal is answered, not re-raised; the same
signal twice (Ctrl-C, Ctrl-C) cuts the transfers at once and still closes the application; a
cut request's cancellation is logged once as a count (``proxy.logs`` drops uvicorn's
traceback of it). Two different signals (the terminal's SIGINT, then the supervisor's SIGTERM
to a worker) are one request to stop, not an impatient second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

log = logging.getLogger("proxy")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CUT_WAIT = 5.0  # seconds a cancelled request may take to unwind before the app is closed
_POLL = 0.05


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace: float) -> None:
        super().__init__(config)
        self.grace = grace
        self._signals: list[int] = []
        self.cut_now = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # a server in a thread (tests) is stopped through should_exit
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: no logging here (the interrupted code may hold logging's lock).
        if sig in self._signals:
            self.cut_now = True
        self._signals.append(sig)
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        loop = asyncio.get_running_loop()
        if state.tasks and not self.cut_now:
            log.info(
                "stopping: waiting up to %gs for %d transfers to finish (shutdown_grace; "
                "Ctrl-C again cuts them now)",
                self.grace,
                len(state.tasks),
            )
        deadline = loop.time() + self.grace
        # Polled: uvicorn's task set and a signal handler's flag have no event to wait on.
        while state.tasks and not self.cut_now and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_POLL)
        left = list(state.tasks)
        if left:
            why = "on a second signal" if self.cut_now else f"after {self.grace:g}s"
            log.warning("stopping: cut %d unfinished transfers %s", len(left), why)
        # Connections first: a client then sees its transfer cut, never the 500 that uvicorn
        # answers a cancelled request that had not started its response.
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        if left:
            await asyncio.sleep(_POLL)  # connection_lost runs: the requests see the disconnect
            for task in left:
                task.cancel()
            await asyncio.wait(left, timeout=_CUT_WAIT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CUT_WAIT):
                for server in self.servers:
                    await server.wait_closed()
        await self.lifespan.shutdown()
        log.info("stopped")


class _QuietProcess(Process):
    """A worker process that runs a QuietServer."""

    grace = 10.0

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = QuietServer(self.config, self.grace)
        return self._server


class QuietMultiprocess(Multiprocess):
    """uvicorn's supervisor whose workers stop as QuietServer does."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], grace: float):
        super().__init__(config, sockets)
        self.grace = grace

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = _QuietProcess(self.config, self.sockets)
            process.grace = self.grace  # travels to the spawned child with the process object
            process.start()
            self.processes.append(process)

    def join_all(self) -> None:
        """Wait for the workers; a second SIGINT or SIGTERM meanwhile is passed on, so that a
        worker letting its transfers finish hears the same signal twice and cuts them at once
        (QuietServer), as a single process does. A terminal's Ctrl-C reaches the workers
        itself; a supervisor (systemd, Docker) signals this process alone."""
        while any(p.process.is_alive() for p in self.processes):
            if self.signal_queue:
                self.signal_queue.clear()
                self.terminate_all()
            for process in self.processes:
                process.process.join(_POLL)
        super().join_all()
