"""Connections only to addresses the guard allows: the address check once more, at connect time.

``AddressGuard`` checks a URL before it is asked, but a name may resolve otherwise a moment later
(DNS rebinding: public for the check, internal for the connection). Here the name is resolved by
the guard, every address checked, and the connection made to one of those very addresses, so the
check and the connection cannot disagree. TLS still verifies, and SNI still names, the host:
httpcore hands the host name to TLS separately from the address connected to.

Connections through an outbound proxy (HTTPS_PROXY) go to the proxy; httpx gives those their
own pools, which this does not touch: there the URL check in ``Upstream`` is what applies.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from proxy.origins import AddressGuard

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, guard: AddressGuard, inner: httpcore.AsyncNetworkBackend) -> None:
        self._guard = guard
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.connectable(host, port)  # Refused if any is internal
        targets = [str(a) for a in addresses] or [host]  # unresolvable here: fails as it would
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for target in targets:
            try:
                stream = await self._inner.connect_tcp(
                    target,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return _Stream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """A connection whose "is it still usable" answer costs one poll: httpcore asks it of
    every pooled connection each time a request is placed, and anyio builds that answer from
    a fresh table of socket attributes (a getpeername call) every time, which made a third
    of a prefetch pass's event loop time."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        wrapped = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _Stream(wrapped)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return is_socket_readable(self._socket)
        return self._inner.get_extra_info(info)


def guard_connections(client: httpx.AsyncClient, guard: AddressGuard) -> bool:
    """Put the guard under the client's direct connections; False if this httpx has no place
    for it (then only the URL checks apply)."""
    pool = getattr(client._transport, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        return False
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.AsyncNetworkBackend):
        return False
    pool._network_backend = GuardedBackend(guard, inner)
    return True
