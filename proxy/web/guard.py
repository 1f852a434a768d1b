"""The HTTP connection layer: uvicorn's httptools protocol with the limits a server facing
hostile clients needs, enforced while bytes arrive rather than once a whole head is in.

- A connection with no request in progress and no bytes arriving is closed after
  ``idle_timeout`` seconds: fresh connections too (uvicorn times out only keep-alive ones).
- A request head must be complete within ``head_timeout`` seconds of its first byte, however
  slowly the bytes trickle in: 408, then the connection is closed. The same deadline holds for
  bytes that arrive after an answer (a body the app did not read).
- A head larger than ``max_head_size`` is refused as it arrives (414 while still in the
  request target, 431 in the headers), so the parser never holds more than the limit plus one
  read; before, a 200 MB header value was buffered (and copied, quadratically) whole.
- A response the client stops reading (writing paused, and not one byte taken) for
  ``send_timeout`` seconds is dropped, so never-reading clients cannot hold slots for ever;
  a slow reader that takes anything in that time is left alone.
- At most ``max_connections`` connections, lowered to fit the open-file limit with room left
  for files, upstream sockets and the cache. When a new one arrives at the cap, the connection
  idle the longest (keep-alive, or still sending its head: a half-sent request costs a file
  descriptor and nothing more) is closed to make room, so one client holding many half-sent
  requests cannot lock others out. If every connection is busy with a request, the newcomer is
  served ``/health`` only, other paths a 503, and past a small overflow allowance it gets the 503
  at once without a read.

Memory per slow reader is bounded where responses are written: uvicorn waits for the socket
to drain before each body chunk, so a response costs at most about two of its chunks
(proxy.web.responses keeps them small).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import resource
import socket
import struct
import termios
import time
import weakref
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.settings import Settings

log = logging.getLogger("proxy")

HEALTH_PATH = "/health"
FULL_NOTE_EVERY = 60.0  # seconds between warnings that the connection cap is reached
LINGER = 2.0  # seconds a refused client's further bytes are read and dropped before the close


@dataclass(frozen=True)
class ConnectionLimits:
    idle_timeout: float = 15.0
    head_timeout: float = 10.0
    max_head_size: int = 64 * 1024
    max_connections: int = 1000
    send_timeout: float = 60.0
    overflow: int = 16  # connections past the cap that may still ask /health

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            idle_timeout=settings.idle_timeout,
            head_timeout=settings.head_timeout,
            max_head_size=settings.max_head_size,
            max_connections=settings.max_connections,
            send_timeout=settings.send_timeout,
        )

    def fitted(self, open_files: int | None) -> ConnectionLimits:
        """The cap lowered so that connections leave a quarter of ``open_files`` (at least 64)
        for everything else a worker opens; the overflow comes out of that reserve."""
        if open_files is None:
            return self
        reserve = max(64, open_files // 4)
        cap = max(1, min(self.max_connections, open_files - reserve))
        overflow = max(4, min(reserve // 8, cap // 8))
        return dataclasses.replace(self, max_connections=cap, overflow=overflow)


def raise_open_file_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the usual 1,024 soft limit
    is far below what a server needs); the resulting limit, or None if unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - a platform that refuses
            pass
    return None if soft == resource.RLIM_INFINITY else soft


class _Pool:
    """The connections of one server: counts, and the not-busy ones, longest idle first."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.overflow = 0
        self.idle: dict[GuardedProtocol, None] = {}
        self._noted = -FULL_NOTE_EVERY

    def note_full(self) -> None:
        """Tell the operator (at most once a minute) that the cap is being reached."""
        now = time.monotonic()
        if now - self._noted >= FULL_NOTE_EVERY:
            self._noted = now
            log.warning(
                "%d connections open (max_connections): closing idle ones, then answering "
                "/health only (503 for the rest) until some end",
                self.open,
            )


_pools: weakref.WeakKeyDictionary[ServerState, _Pool] = weakref.WeakKeyDictionary()


def _pool(state: ServerState, config: Config) -> _Pool:
    pool = _pools.get(state)
    if pool is None:
        limits: ConnectionLimits = getattr(config, "connection_limits", ConnectionLimits())
        pool = _pools[state] = _Pool(limits.fitted(raise_open_file_limit()))
    return pool


def _plain(status: int, reason: str, body: bytes, *extra: bytes) -> bytes:
    head = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


BUSY_ANSWER = _plain(503, "Service Unavailable", b"too many connections\n", b"retry-after: 1")


class _HealthOnly:
    """The app as an overflow connection sees it: /health, or a 503 for anything else."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        body = b"too many connections\n"
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the limits above; pass as ``Config(http=...)``."""

    def __init__(self, config: Config, server_state: ServerState, *args: Any, **kw: Any) -> None:
        super().__init__(config, server_state, *args, **kw)
        self._pool = _pool(server_state, config)
        self._limits = self._pool.limits
        self.timeout_keep_alive = self._limits.idle_timeout  # type: ignore[assignment]
        self._overflow = False
        self._counted = False  # in the pool's open or overflow count
        self._busy = False  # a head is complete and its response is not
        self._reading_head = True  # the next bytes on the wire belong to a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._lingering = False  # refused: reading only to drop what the client still sends

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        pool = self._pool
        if pool.open >= self._limits.max_connections:
            pool.note_full()
            if pool.idle:
                victim = next(iter(pool.idle))
                victim._evict()
                if victim._overflow:  # only an overflow place came free
                    self._overflow = True
                    self.app = _HealthOnly(self.app)
            elif pool.overflow < self._limits.overflow:
                self._overflow = True
                self.app = _HealthOnly(self.app)
            else:
                self._reading_head = False
                transport.write(BUSY_ANSWER)
                transport.close()
                return
        self._counted = True
        if self._overflow:
            pool.overflow += 1
        else:
            pool.open += 1
        pool.idle[self] = None
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        pool = self._pool
        pool.idle.pop(self, None)
        if self._counted:
            self._counted = False
            if self._overflow:
                pool.overflow -= 1
            else:
                pool.open -= 1
        self._reading_head = self._busy = False
        self._cancel_head_timer()
        self._cancel_send_timer()
        super().connection_lost(exc)

    def _evict(self) -> None:
        """Make room for a newcomer: close this not-busy connection."""
        self._pool.idle.pop(self, None)
        self.transport.close()

    def _arm_idle(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self._limits.idle_timeout, self.timeout_keep_alive_handler
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._lingering or not self._counted:
            return
        super().data_received(data)  # feeds the parser, whose callbacks update the state
        if self.transport.is_closing():
            return
        if self._reading_head and not self._busy:
            # Still inside a head after this read: count it against the limit. Not while a
            # request is being answered (a head completed in this very read, and pipelined
            # bytes after it): the app's answer is under way and owns the connection.
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_head_size:
                # the parser reports the target as it comes, headers only once each is whole
                if len(getattr(self, "url", b"")) * 2 > self._head_bytes:
                    self._refuse(414, "URI Too Long", b"request target too long\n")
                else:
                    self._refuse(
                        431, "Request Header Fields Too Large", b"request head too large\n"
                    )
                return
        if not self._busy and self._head_timer is None:
            # Bytes while no request is served (a head begun, or a body nobody reads after its
            # answer): they must end within the deadline, however slowly they come.
            self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_late)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._arm_send_timer()

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def _queued(self) -> int:
        """Bytes not yet taken by the client: ours, and those in the kernel's send queue (which
        on loopback can hold megabytes, so our buffer alone shows no progress for a long time)."""
        queued = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None and hasattr(termios, "TIOCOUTQ"):
            with contextlib.suppress(OSError):
                answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
                queued += struct.unpack("i", answer)[0]
        return queued

    def _arm_send_timer(self) -> None:
        waiting = self._queued()
        self._send_timer = self.loop.call_later(
            self._limits.send_timeout, self._send_check, waiting
        )

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_check(self, waiting: int) -> None:
        """Writing has been paused for send_timeout seconds: if the client took some bytes in
        that time it is slow, not stalled, and gets another period; if none, it is dropped
        with what is buffered for it."""
        self._send_timer = None
        if self.transport.is_closing():
            return
        if self._queued() < waiting:
            self._arm_send_timer()
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset, so the kernel drops its queue too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._busy and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", b"request head not sent in time\n")

    def _refuse(self, status: int, reason: str, body: bytes) -> None:
        """Answer and close. Closing with unread bytes would reset the connection, and the
        client might never see the answer; so, where TCP allows, the answer is followed by a
        half-close, and what the client still sends is read and dropped for a moment."""
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self.transport.write(_plain(status, reason, body))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    # Parser callbacks and response completion: where a connection turns busy or idle. They
    # run for every request, so they stay short.
    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._busy = True
        self._pool.idle.pop(self, None)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # uvicorn starts the next request at once
        super().on_response_complete()
        if self.transport.is_closing() or pipelined:
            return
        self._busy = False
        self._pool.idle[self] = None
        if self._head_bytes and self._head_timer is None:
            # the next head began while this response was going out: its deadline starts now
            self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_late)
