"""A fake upstream index: a real HTTP server on loopback, in a thread of the test process.

It speaks the simple API (PEP 503 HTML, PEP 691 JSON, negotiated), serves files and PEP 658
``.metadata``, the JSON API and the XML-RPC changelog, and has switches for the faults real
upstreams show. It is built on the standard library so it shares no code with the proxy.
"""

from __future__ import annotations

import base64
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from packaging.utils import canonicalize_name

from tests.support import fake_index as render
from tests.support.fake_index import FakeFile, FakeIndex
from tests.support.wheels import Built

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]


def wants_json(accept: str) -> bool:
    """A small q-value reading of Accept, enough for pip, uv and the proxy."""
    best_json = best_html = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media in (JSON_TYPE, "application/vnd.pypi.simple.latest+json"):
            best_json = max(best_json, q)
        elif media in ("text/html", "application/vnd.pypi.simple.v1+html", "*/*"):
            best_html = max(best_html, q)
    return best_json > best_html


class FakeUpstream:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, relative_urls: bool = False):
        self.index = FakeIndex()
        self.relative_urls = relative_urls
        self.requests: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        # Fault switches, flipped by tests while the server runs.
        self.down = False
        self.status_override: int | None = None
        self.delay = 0.0
        self.corrupt_files = False
        self.truncate_files = False
        self.html_only = False
        self.json_only = False
        self.no_etag = False
        self.xmlrpc_refuse = False
        self.xmlrpc_page_size = 50_000
        self.auth: tuple[str, str] | None = None
        self.fail_next = 0  # a burst: the next N requests answer fail_status
        self.fail_status = 503
        self.wrong_length = False  # file responses claim more bytes than they send
        self.throttle = 0.0  # seconds to sleep after each 64 KiB of a file body (slow links)
        self.stale_serial_for: dict[str, int] = {}
        # A ready-made JSON root (benchmarks: hundreds of thousands of projects).
        self.root_json_override: bytes | None = None
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self.simple_url = self.base_url + "/simple/"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

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
        fake = FakeFile(built, requires_python, yanked, with_metadata)
        if upload_time is not None:
            fake.upload_time = upload_time
        self.index.add(project, fake)

    def remove_file(self, project: str, filename: str) -> None:
        self.index.remove_file(project, filename)

    def yank(self, project: str, filename: str, reason: str | bool = True) -> None:
        self.index.yank(project, filename, reason)

    def remove_project(self, name: str) -> None:
        self.index.remove_project(name)

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


def _handler_for(fake: FakeUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        upstream = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
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
        with fake._log_lock:
            burst = fake.fail_next > 0
            if burst:
                fake.fail_next -= 1
        if burst:
            self._send(fake.fail_status, b"burst\n", {"Retry-After": "0"})
            return True
        if fake.status_override is not None:
            self._send(fake.status_override, b"fault switch\n", {"Retry-After": "0"})
            return True
        return False

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self._faulted():
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        segments = path.strip("/").split("/")
        if path == "/simple/":
            self._root(query)
        elif segments[0] == "simple" and len(segments) == 2:
            self._project(segments[1], path.endswith("/"), query)
        elif segments[0] == "files" and len(segments) == 3:
            self._file(segments[1], segments[2])
        elif segments[0] == "pypi" and len(segments) == 3 and segments[2] == "json":
            self._json_api(segments[1])
        else:
            self._send(404, b"not found\n")

    def _format(self, query: dict[str, list[str]]) -> bool:
        fake = self.upstream
        if fake.html_only:
            return False
        if fake.json_only:
            return True
        accept = query.get("format", [self.headers.get("Accept", "")])[0]
        return wants_json(accept)

    def _page(self, body: bytes, as_json: bool, serial: int) -> None:
        etag = render.etag_of(body)
        headers = {
            "Content-Type": JSON_TYPE if as_json else "text/html; charset=utf-8",
            "X-PyPI-Last-Serial": str(serial),
        }
        if not self.upstream.no_etag:
            headers["ETag"] = etag
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", headers)
                return
        self._send(200, body, headers)

    def _root(self, query: dict[str, list[str]]) -> None:
        index = self.upstream.index
        with index.lock:
            as_json = self._format(query)
            override = self.upstream.root_json_override
            if as_json and override is not None:
                self._page(override, True, index.serial)
                return
            body = render.root_json(index) if as_json else render.root_html(index)
            self._page(body, as_json, index.serial)

    def _project(self, name: str, slash: bool, query: dict[str, list[str]]) -> None:
        normalized = canonicalize_name(name)
        if normalized != name or not slash:
            self._send(301, b"", {"Location": f"/simple/{normalized}/"})
            return
        fake = self.upstream
        with fake.index.lock:
            project = fake.index.projects.get(normalized)
            if project is None:
                self._send(404, b"no such project\n")
                return
            serial = fake.stale_serial_for.get(normalized, project.serial)
            as_json = self._format(query)
            if as_json:
                body = render.project_json(project, fake.base_url, fake.relative_urls, serial)
            else:
                body = render.project_html(project, fake.base_url, fake.relative_urls)
            self._page(body, as_json, serial)

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
        headers = {"Content-Type": "application/octet-stream"}
        if fake.truncate_files and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fake.wrong_length and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data) + 10))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and "," not in range_header:
            first, _, last = range_header[6:].partition("-")
            if first.isdigit() and int(first) < len(data):
                end = min(int(last), len(data) - 1) if last.isdigit() else len(data) - 1
                headers["Content-Range"] = f"bytes {first}-{end}/{len(data)}"
                self._send(206, data[int(first) : end + 1], headers)
                return
        if fake.throttle and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for start in range(0, len(data), 65536):
                    self.wfile.write(data[start : start + 65536])
                    self.wfile.flush()
                    time.sleep(fake.throttle)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        self._send(200, data, headers)

    def _json_api(self, name: str) -> None:
        fake = self.upstream
        with fake.index.lock:
            project = fake.index.projects.get(canonicalize_name(name))
            if project is None:
                self._send(404, b'{"message": "Not Found"}', {"Content-Type": "application/json"})
                return
            body = render.json_api(project, fake.base_url)
        self._send(
            200,
            body,
            {"Content-Type": "application/json", "X-PyPI-Last-Serial": str(project.serial)},
        )

    def do_POST(self) -> None:
        if self._faulted():
            return
        length = int(self.headers.get("Content-Length", "0") or 0)
        payload = self.rfile.read(length)
        if urlsplit(self.path).path.rstrip("/") != "/pypi":
            self._send(404, b"not found\n")
            return
        if self.upstream.xmlrpc_refuse:
            self._send(405, b"XML-RPC is not served here\n")
            return
        try:
            params, method = xmlrpc.client.loads(payload)
            result = self._xmlrpc(method or "", params)
            body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        except Exception as exc:
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, str(exc)))
        self._send(200, body.encode(), {"Content-Type": "text/xml"})

    def _xmlrpc(self, method: str, params: tuple[Any, ...]) -> Any:
        index = self.upstream.index
        with index.lock:
            if method == "changelog_last_serial":
                return index.serial
            if method == "list_packages_with_serial":
                return {p.name: p.serial for p in index.projects.values()}
            if method == "changelog_since_serial":
                since = int(params[0])
                rows = [list(row) for row in index.changelog if row[4] > since]
                return rows[: self.upstream.xmlrpc_page_size]
        raise ValueError(f"unknown method {method!r}")
