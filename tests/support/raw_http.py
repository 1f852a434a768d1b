"""HTTP/1.1 with bytes as they are, for tests that send what a well-behaved client library will
not (control bytes, Latin-1 in header values, broken framing).

A closed connection is an answer of its own (``Reply.status == 0``), never silently a success:
each test decides whether it is acceptable. Every read is bounded by a socket timeout.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from types import TracebackType

TIMEOUT = 10.0
MAX_HEAD = 64 * 1024


@dataclass
class Reply:
    status: int  # 0: the connection closed (or timed out) before a whole response arrived
    headers: dict[bytes, bytes] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    raw: bytes = b""

    @property
    def closes(self) -> bool:
        return self.status == 0 or self.headers.get(b"connection", b"").lower() == b"close"


def _read_reply(sock: socket.socket, head_only: bool) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            return Reply(0, raw=data)
        chunk = sock.recv(65536)
        if not chunk:
            return Reply(0, raw=data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not lines[0].startswith(b"HTTP/1.") or len(parts) < 2 or not parts[1].isdigit():
        return Reply(0, raw=data)
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    status = int(parts[1])
    length = 0
    if not head_only and status not in (204, 304) and status >= 200:
        if b"transfer-encoding" in headers:
            raise AssertionError(f"raw_http reads only Content-Length bodies: {head!r}")
        length = int(headers.get(b"content-length", b"0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return Reply(0, headers, body, data)
        body += chunk
    return Reply(status, headers, body[:length], head + b"\r\n\r\n" + body)


class RawConnection:
    """One keep-alive connection at a time to ``host:port``, reopened when the server closes it.

    ``send`` answers the one response to one request. As HTTP clients do, a request that got no
    byte back on a connection already used before is sent once more on a fresh one (the server
    may have closed an idle keep-alive connection meanwhile); on a fresh connection a close
    without a response is returned as status 0.
    """

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.address = (host, int(port))
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.used = False

    def _open(self) -> socket.socket:
        self.close()
        self.sock = socket.create_connection(self.address, timeout=self.timeout)
        self.used = False
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, request: bytes, *, head_only: bool = False) -> Reply:
        reused = self.sock is not None and self.used
        reply = self._once(request, head_only)
        if reply.status == 0 and not reply.raw and reused:
            reply = self._once(request, head_only, fresh=True)
        if reply.closes:
            self.close()
        return reply

    def _once(self, request: bytes, head_only: bool, fresh: bool = False) -> Reply:
        sock = self.sock if self.sock is not None and not fresh else self._open()
        self.used = True
        try:
            sock.sendall(request)
            return _read_reply(sock, head_only)
        except (ConnectionError, TimeoutError):
            return Reply(0)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def request_bytes(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"
