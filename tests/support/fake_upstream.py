"""A fake upstream index: a real HTTP server on loopback, in a thread of the test process.

It speaks the simple API (PEP 503 HTML, PEP 691 JSON, negotiated), serves files and PEP 658
``.metadata``, the JSON API and the XML-RPC changelog, and has switches for the faults real
upstreams show. It is built on the standard library so it shares no code with the proxy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sys
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from packaging.utils import canonicalize_name

from tests.support import fake_index as model
from tests.support.wheels import Built

_Request = socket.socket | tuple[bytes, socket.socket]


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # raw, with the query string
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True)
class RawAnswer:
    """A hand-made answer for one path (redirects, crafted pages, bombs, trickles)."""

    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes = b""
    chunk: int = 65536  # bytes written between pauses
    pace: float = 0.0  # seconds to sleep after each chunk (a trickle)
    length: bool = True  # False: no Content-Length; the body ends when the connection closes


class _Server(ThreadingHTTPServer):
    """Knows its open connections, so stop() can end keep-alive ones a client still holds."""

    daemon_threads = True
    request_queue_size = 256  # many concurrent connections (the default, 5, drops SYNs)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self.connections_lock:
                self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        if isinstance(request, socket.socket):
            with self.connections_lock:
                self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        # Clients hanging up mid-answer is routine here (faults, timeouts); bugs still print.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class FakeUpstream:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, relative_urls: bool = False):
        self.index = model.FakeIndex()
        self.relative_urls = relative_urls
        self.requests: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        # Fault switches, flipped by tests while the server runs.
        self.down = False  # connections closed without an answer
        self.status_override: int | None = None  # every request answers this status
        self.delay = 0.0  # seconds before each answer
        self.corrupt_files = False  # same length, different bytes
        self.truncate_files = False  # full Content-Length, half the body, then close
        self.html_only = False
        self.json_only = False
        self.no_etag = False
        self.no_serial = False  # pages without X-PyPI-Last-Serial (HTML then has no serial)
        self.xmlrpc_refuse = False  # POST /pypi answers 405
        self.xmlrpc_page_size = 50_000
        self.auth: tuple[str, str] | None = None  # HTTP Basic required when set
        self.fail_next = 0  # a burst: the next N requests answer fail_status
        self.fail_status = 503
        self.wrong_length = False  # file responses claim more bytes than they send
        self.throttle = 0.0  # seconds to sleep after each 64 KiB of a file body (slow links)
        # How file Range requests are answered: "honest", "ignored" (the whole file, 200, as
        # some servers do) or "shifted" (a 206 whose bytes start one earlier than it says).
        self.ranges = "honest"
        # filename -> other bytes that ranged GETs of it answer from (a lying mirror node
        # behind a load balancer: whole GETs get the real file, ranged ones another).
        self.range_body: dict[str, bytes] = {}
        self.stale_serial_for: dict[str, int] = {}  # project -> serial reported instead
        # When not None, file bodies crawl (1 KiB every 0.5 s) until the event is set, then go
        # at full speed: downloads that hold their connections until a test lets them go.
        self.files_gate: threading.Event | None = None
        # path (no query) -> a hand-made answer with any status, headers and pacing (redirects,
        # bombs, trickles); served before anything else the fake knows, `raw` included.
        self.raw_routes: dict[str, RawAnswer] = {}
        # filename -> how many more GETs answer it with one byte changed, slowly (a bad mirror
        # node behind a load balancer: the first answer lies, a retry gets the real bytes).
        self.corrupt_first: dict[str, int] = {}
        self.corrupt_pause = 0.05  # seconds between 64 KiB chunks of such a lying answer
        # Exact paths answered chunked, with no Content-Length: path -> (chunk, seconds to pause
        # after it) pairs, an empty chunk only pausing (an upstream that streams more, or less,
        # than its page says).
        self.raw_chunked: dict[str, list[tuple[bytes, float]]] = {}
        # Hand-written answers for exact paths (pages no well-behaved index would send):
        # path -> (content type, body).
        self.raw: dict[str, tuple[str, bytes]] = {}
        self.not_found_once: set[str] = set()  # projects whose next page request answers 404
        # Project pages answer 200 text/html "Scheduled maintenance": no links, no serial.
        self.maintenance = False
        self.maintenance_root = False  # the same for the root index /simple/
        # A ready-made JSON root (benchmarks: hundreds of thousands of projects).
        self.root_json_override: bytes | None = None
        self._server = _Server((host, port), _handler_for(self))
        # A short poll interval: shutdown() waits up to one, at the end of every test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._stopped = False
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self.simple_url = self.base_url + "/simple/"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and end open connections, as a dead host would."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.close_connections()
        self._server.server_close()  # joins the handler threads

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- content -----------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        return self.index.serial

    def add_project(self, name: str) -> None:
        self.index.project(name)

    def add_dist(
        self,
        project: str,
        built: Built,
        *,
        requires_python: str | None = None,
        yanked: bool | str = False,
        with_metadata: bool = True,
        upload_time: str | None = None,
    ) -> None:
        fake = model.FakeFile(built, requires_python, yanked, with_metadata)
        if upload_time is not None:
            fake.upload_time = upload_time
        self.index.add(project, fake)

    def remove_file(self, project: str, filename: str) -> None:
        self.index.remove_file(project, filename)

    def yank(self, project: str, filename: str, reason: str | bool = True) -> None:
        self.index.yank(project, filename, reason)

    def remove_project(self, name: str) -> None:
        self.index.remove_project(name)

    def add_odd_entry(self, project: str, filename: str, sha256: str) -> None:
        """List an entry the way a broken index might: any filename, any hash text, no file."""
        with self.index.lock:
            self.index.project(project).odd_entries.append((filename, sha256))

    def take_not_found(self, project: str) -> bool:
        with self._log_lock:
            if project in self.not_found_once:
                self.not_found_once.discard(project)
                return True
            return False

    def reported_serial(self, project: str, actual: int) -> int:
        stale = {canonicalize_name(k): v for k, v in self.stale_serial_for.items()}
        return stale.get(canonicalize_name(project), actual)

    # -- the request log ---------------------------------------------------------------------

    def record(self, entry: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def count(self, path_prefix: str, method: str = "GET") -> int:
        with self._log_lock:
            return sum(
                1 for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            )

    def reset_log(self) -> None:
        with self._log_lock:
            self.requests.clear()

    def take_corrupt(self, filename: str) -> bool:
        with self._log_lock:
            left = self.corrupt_first.get(filename, 0)
            if left <= 0:
                return False
            self.corrupt_first[filename] = left - 1
            return True

    def take_burst(self) -> bool:
        with self._log_lock:
            if self.fail_next <= 0:
                return False
            self.fail_next -= 1
            return True


def _handler_for(fake: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        upstream = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    upstream: FakeUpstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        # Read it even when a fault answers: leftovers would garble the next keep-alive request.
        length = self.headers.get("Content-Length", "0")
        return self.rfile.read(int(length)) if length.isdigit() else b""

    def _faulted(self) -> bool:
        fake = self.upstream
        fake.record(
            RequestRecord(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        if fake.delay:
            time.sleep(fake.delay)
        if fake.down:
            self.close_connection = True
            return True
        if fake.auth is not None:
            expected = base64.b64encode(f"{fake.auth[0]}:{fake.auth[1]}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._send(401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="fake"'})
                return True
        if fake.take_burst():
            self._send(fake.fail_status, b"burst\n", {"Retry-After": "0"})
            return True
        if fake.status_override is not None:
            self._send(fake.status_override, b"fault switch\n", {"Retry-After": "0"})
            return True
        return False

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._read_body()
        if self._faulted():
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        segments = path.strip("/").split("/")
        raw = self.upstream.raw_routes.get(parts.path)
        if raw is not None:
            self._raw(raw)
        elif path in self.upstream.raw:
            content_type, body = self.upstream.raw[path]
            self._send(200, body, {"Content-Type": content_type})
        elif path in self.upstream.raw_chunked:
            self._chunked(self.upstream.raw_chunked[path])
        elif path == "/simple/":
            self._root(query)
        elif path == "/simple":
            self._redirect("/simple/", parts.query)
        elif segments[0] == "simple" and len(segments) == 2:
            self._project(segments[1], path.endswith("/"), parts.query)
        elif segments[0] == "files" and len(segments) == 3:
            self._file(segments[1], segments[2])
        elif segments[0] == "pypi" and len(segments) == 3 and segments[2] == "json":
            self._json_api(segments[1])
        elif segments[0] == "pypi" and len(segments) == 4 and segments[3] == "json":
            self._json_api(segments[1], segments[2])
        else:
            self._send(404, b"not found\n")

    def _redirect(self, location: str, query: str) -> None:
        self._send(301, b"", {"Location": location + (f"?{query}" if query else "")})

    def _wants_json(self, query: dict[str, list[str]]) -> bool:
        fake = self.upstream
        if fake.html_only:
            return False
        if fake.json_only:
            return True
        # PEP 691: ?format= stands in for the Accept header.
        return model.wants_json(query.get("format", [self.headers.get("Accept", "")])[0])

    def _page(self, body: bytes, as_json: bool, serial: int) -> None:
        headers = {
            "Content-Type": model.JSON_TYPE if as_json else "text/html; charset=utf-8",
            "Vary": "Accept",
        }
        if not self.upstream.no_serial:
            headers["X-PyPI-Last-Serial"] = str(serial)
        if not self.upstream.no_etag:
            headers["ETag"] = etag = model.etag_of(body)
            if model.etag_matches(self.headers.get("If-None-Match"), etag):
                self._send(304, b"", headers)
                return
        self._send(200, body, headers)

    def _root(self, query: dict[str, list[str]]) -> None:
        fake = self.upstream
        if fake.maintenance_root:
            body = b"<html><body><h1>Scheduled maintenance</h1>Back soon.</body></html>"
            self._send(200, body, {"Content-Type": "text/html; charset=utf-8"})
            return
        as_json = self._wants_json(query)
        # Render under the lock, send outside it: a slow client must not block mutations.
        with fake.index.lock:
            serial = fake.index.serial
            if as_json:
                body = fake.root_json_override or model.root_json(fake.index)
            else:
                body = model.root_html(fake.index)
        self._page(body, as_json, serial)

    def _project(self, name: str, slash: bool, raw_query: str) -> None:
        normalized = canonicalize_name(name)
        if normalized != name or not slash:
            self._redirect(f"/simple/{normalized}/", raw_query)
            return
        fake = self.upstream
        if fake.take_not_found(normalized):
            self._send(404, b"no such project (once)\n")
            return
        if fake.maintenance:
            body = b"<html><body><h1>Scheduled maintenance</h1>Back soon.</body></html>"
            self._send(200, body, {"Content-Type": "text/html; charset=utf-8"})
            return
        as_json = self._wants_json(parse_qs(raw_query))
        with fake.index.lock:
            project = fake.index.projects.get(normalized)
            if project is None:
                rendered = None
            else:
                serial = fake.reported_serial(normalized, project.serial)
                if as_json:
                    body = model.project_json(project, fake.base_url, fake.relative_urls, serial)
                else:
                    body = model.project_html(project, fake.base_url, fake.relative_urls)
                rendered = body, serial
        if rendered is None:
            self._send(404, b"no such project\n")
        else:
            self._page(rendered[0], as_json, rendered[1])

    def _file(self, project: str, filename: str) -> None:
        fake = self.upstream
        found = fake.index.find_file(project, filename)
        if found is None:
            self._send(404, b"no such file\n")
            return
        entry, is_metadata = found
        data = entry.built.metadata if is_metadata else entry.built.content
        if fake.corrupt_files and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if self.command == "GET" and data and fake.take_corrupt(filename):
            middle = len(data) // 2
            lie = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
            self._stream(200, lie, headers, len(lie), pause=fake.corrupt_pause)
            return
        if self.command == "GET" and (fake.truncate_files or fake.wrong_length):
            # Truncated: half the promised body. Wrong length: all of it, but 10 bytes promised
            # more. Either way the connection closes after, as a broken upstream's would.
            claimed = len(data) + (10 if fake.wrong_length else 0)
            sent = data[: len(data) // 2] if fake.truncate_files else data
            self._stream(200, sent, headers, claimed)
            self.close_connection = True
            return
        if self.headers.get("Range") and filename in fake.range_body:
            data = fake.range_body[filename]
        try:
            byte_range = model.parse_range(self.headers.get("Range"), len(data))
        except model.Unsatisfiable:
            headers["Content-Range"] = f"bytes */{len(data)}"
            self._send(416, b"", headers)
            return
        status = 200
        if fake.ranges == "ignored":
            byte_range = None
        if byte_range is not None and fake.ranges == "shifted" and byte_range[0] > 0:
            first, last = byte_range
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data, status = data[first - 1 : last], 206
            byte_range = None
        if byte_range is not None:
            first, last = byte_range
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data, status = data[first : last + 1], 206
        if fake.files_gate is not None and self.command == "GET":
            self._crawl(status, data, headers, fake.files_gate)
            return
        if fake.throttle and self.command == "GET":
            self._stream(status, data, headers, len(data), pause=fake.throttle)
            return
        self._send(status, data, headers)

    def _stream(
        self, status: int, data: bytes, headers: dict[str, str], length: int, pause: float = 0.0
    ) -> None:
        """Write the body in 64 KiB chunks, sleeping between them (slow links)."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for start in range(0, len(data), 65536):
                self.wfile.write(data[start : start + 65536])
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _crawl(
        self, status: int, data: bytes, headers: dict[str, str], gate: threading.Event
    ) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        sent = 0
        try:
            while sent < len(data):
                step = len(data) - sent if gate.is_set() else 1024
                self.wfile.write(data[sent : sent + step])
                self.wfile.flush()
                sent += step
                if not gate.is_set():
                    gate.wait(0.5)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _raw(self, answer: RawAnswer) -> None:
        self.send_response(answer.status)
        headers = dict(answer.headers or {})
        if answer.length:
            headers.setdefault("Content-Length", str(len(answer.body)))
        else:
            headers["Connection"] = "close"
            self.close_connection = True
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            for start in range(0, len(answer.body), answer.chunk):
                self.wfile.write(answer.body[start : start + answer.chunk])
                self.wfile.flush()
                if answer.pace:
                    time.sleep(answer.pace)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json_api(self, name: str, version: str | None = None) -> None:
        fake = self.upstream
        with fake.index.lock:
            project = fake.index.projects.get(canonicalize_name(name))
            found = None if project is None else (model.json_api(project, fake.base_url), project)
        if found is not None and version is not None:
            found = _one_version(found[0], version), found[1]
        if found is None or not found[0]:
            self._send(404, b'{"message": "Not Found"}', {"Content-Type": "application/json"})
            return
        body, project = found
        headers = {"Content-Type": "application/json", "X-PyPI-Last-Serial": str(project.serial)}
        if not fake.no_etag:
            headers["ETag"] = etag = model.etag_of(body)
            if model.etag_matches(self.headers.get("If-None-Match"), etag):
                self._send(304, b"", headers)
                return
        self._send(200, body, headers)

    def do_POST(self) -> None:
        payload = self._read_body()
        if self._faulted():
            return
        if urlsplit(self.path).path.rstrip("/") != "/pypi":
            self._send(404, b"not found\n")
            return
        if self.upstream.xmlrpc_refuse:
            self._send(405, b"XML-RPC is not served here\n", {"Allow": "GET, HEAD"})
            return
        try:
            params, method = xmlrpc.client.loads(payload)
            result = self.upstream.index.xmlrpc(
                method or "", params, self.upstream.xmlrpc_page_size
            )
            body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        except Exception as exc:  # a fault answer, as a real XML-RPC server gives
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, f"{type(exc).__name__}: {exc}"))
        self._send(200, body.encode(), {"Content-Type": "text/xml"})

    def _chunked(self, chunks: list[tuple[bytes, float]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            for data, pause in chunks:
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _one_version(body: bytes, version: str) -> bytes:
    """The JSON API's answer for one release (its files as ``urls``, no ``releases``), or
    b"" when the project has no such release."""
    data = json.loads(body)
    files = data["releases"].get(version)
    if files is None:
        return b""
    data["info"]["version"] = version
    del data["releases"]
    data["urls"] = files
    return json.dumps(data).encode()
