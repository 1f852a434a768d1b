"""A look-alike package index for the benchmarks, serving a directory of real wheels.

It behaves like an index across the internet, not like a loopback server: every request waits
``--latency-ms`` before its answer (a round trip), a new connection waits ``--handshake-rtts``
more (TCP and TLS), and every byte of every body goes through one shared link of
``--bandwidth-mbit``. It serves what clients and mirrors ask a real index for: simple pages
(PEP 503 HTML and PEP 691 JSON, negotiated; core metadata advertised or not, ``--no-metadata``),
files with HEAD and Range, PEP 658 ``.metadata`` files (absent under ``--no-metadata``, as on a
private index that has none), the JSON API and the XML-RPC changelog.

Run it as its own process (``python -m bench.upstream --dir DIR``): it prints ``READY <url>``
once it listens. ``POST /_bench/rescan`` picks up files added to the directory since (new
serials, changelog rows), so a benchmark can change projects between two mirror passes.

Standard library and ``packaging`` only, and no code shared with the proxy or the tests' fake.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import socket
import sys
import threading
import time
import xmlrpc.client
import zipfile
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
CHUNK = 64 * 1024


@dataclass
class Dist:
    path: Path
    filename: str
    project: str
    version: str
    size: int
    sha256: str
    metadata: bytes | None  # a wheel's METADATA; None for an sdist
    metadata_sha256: str | None
    requires_python: str | None
    upload_time: str
    serial: int


@dataclass
class Project:
    name: str
    files: dict[str, Dist] = field(default_factory=dict)
    serial: int = 0


def _name_version(filename: str) -> tuple[str, str] | None:
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except ValueError:
        return None
    return str(name), str(version)


def _wheel_metadata(path: Path) -> bytes | None:
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            top, _, rest = member.partition("/")
            if top.endswith(".dist-info") and rest == "METADATA":
                return archive.read(member)
    return None


class Index:
    """The directory's dists, grouped by project, with serials and a changelog."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.projects: dict[str, Project] = {}
        self.serial = 0
        self.changelog: list[tuple[str, str, int, str, int]] = []
        self.rescan()

    def rescan(self) -> int:
        """Add files that appeared since the last scan (oldest first); the new serial."""
        known = {f for p in self.projects.values() for f in p.files}
        found = []
        for path in self.directory.rglob("*"):
            if path.name in known or not path.is_file():
                continue
            parsed = _name_version(path.name)
            if parsed is not None:
                found.append((path.stat().st_mtime_ns, path.name, path, parsed))
        for mtime_ns, filename, path, (name, version) in sorted(found):
            data = path.read_bytes()
            metadata = _wheel_metadata(path) if filename.endswith(".whl") else None
            requires_python = None
            if metadata is not None:
                headers = email.parser.BytesHeaderParser().parsebytes(metadata)
                requires_python = headers.get("Requires-Python")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(mtime_ns / 1e9))
            with self.lock:
                self.serial += 1
                project = self.projects.setdefault(name, Project(name))
                project.serial = self.serial
                project.files[filename] = Dist(
                    path=path,
                    filename=filename,
                    project=name,
                    version=version,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    metadata=metadata,
                    metadata_sha256=hashlib.sha256(metadata).hexdigest() if metadata else None,
                    requires_python=requires_python,
                    upload_time=stamp,
                    serial=self.serial,
                )
                self.changelog.append(
                    (name, version, mtime_ns // 10**9, f"add file {filename}", self.serial)
                )
        return self.serial


class Link:
    """One link shared by every answer: bytes queue up behind each other at ``rate``."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.lock = threading.Lock()
        self.free_at = 0.0

    def send(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = time.monotonic()
            self.free_at = max(now, self.free_at) + size / self.rate
            wait = self.free_at - now
        time.sleep(wait)


@dataclass(frozen=True)
class Behaviour:
    latency: float  # seconds per request
    handshake: float  # extra seconds on a connection's first request
    metadata: bool  # advertise and serve PEP 658 metadata
    link: Link


def wants_json(accept: str) -> bool:
    """q-values of the JSON and HTML simple types; ties go to HTML."""
    best = {"json": 0.0, "html": 0.0}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = "json" if media.endswith("+json") else "html" if "html" in media else None
        if media == "*/*":
            kind = "html"
        if kind:
            best[kind] = max(best[kind], q)
    return best["json"] > best["html"]


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) for one satisfiable ``bytes=`` range, None for the whole body, "416"."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    if not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if not first:
        if int(last) == 0:
            return "416"
        return max(0, size - int(last)), size - 1
    if int(first) >= size:
        return "416"
    end = min(int(last), size - 1) if last.isdigit() else size - 1
    return None if end < int(first) else (int(first), end)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], index: Index, behaviour: Behaviour) -> None:
        self.index = index
        self.behaviour = behaviour
        super().__init__(address, Handler)
        self.base_url = f"http://{address[0]}:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    _handshaken = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def _wait(self) -> None:
        behaviour = self.server.behaviour
        pause = behaviour.latency
        if not self._handshaken:
            self._handshaken = True
            pause += behaviour.handshake
        if pause:
            time.sleep(pause)

    def _answer(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.server.behaviour.link.send(len(body))
            self.wfile.write(body)

    def _page(self, body: bytes, as_json: bool, serial: int) -> None:
        etag = '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
        headers = {"X-PyPI-Last-Serial": str(serial), "ETag": etag, "Vary": "Accept"}
        content_type = JSON_TYPE if as_json else "text/html; charset=utf-8"
        if etag in (self.headers.get("If-None-Match") or ""):
            self._answer(304, b"", content_type, headers)
        else:
            self._answer(200, body, content_type, headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._wait()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        segments = path.strip("/").split("/")
        as_json = wants_json(query.get("format", [self.headers.get("Accept", "")])[0])
        if path == "/simple/":
            self._root(as_json)
        elif path == "/simple":
            self._answer(301, b"", "text/plain", {"Location": "/simple/"})
        elif segments[0] == "simple" and len(segments) == 2:
            if segments[1] != canonicalize_name(segments[1]) or not path.endswith("/"):
                target = f"/simple/{canonicalize_name(segments[1])}/"
                self._answer(301, b"", "text/plain", {"Location": target})
            else:
                self._project(segments[1], as_json)
        elif segments[0] == "packages" and len(segments) == 3:
            self._file(segments[1], segments[2])
        elif segments[0] == "pypi" and len(segments) == 3 and segments[2] == "json":
            self._json_api(segments[1])
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _root(self, as_json: bool) -> None:
        index = self.server.index
        with index.lock:
            projects = sorted(index.projects.values(), key=lambda p: p.name)
            serial = index.serial
            if as_json:
                rows = [{"name": p.name, "_last-serial": p.serial} for p in projects]
                meta = {"api-version": "1.1", "_last-serial": serial}
                body = json.dumps({"meta": meta, "projects": rows}).encode()
            else:
                links = "".join(f'<a href="{p.name}/">{p.name}</a>\n' for p in projects)
                body = f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()
        self._page(body, as_json, serial)

    def _url(self, dist: Dist) -> str:
        return f"{self.base_url}/packages/{quote(dist.project)}/{quote(dist.filename)}"

    def _project(self, name: str, as_json: bool) -> None:
        index = self.server.index
        advertise = self.server.behaviour.metadata
        with index.lock:
            project = index.projects.get(name)
            dists = sorted(project.files.values(), key=lambda d: d.serial) if project else []
        if project is None:
            self._answer(404, b"no such project\n", "text/plain")
            return
        if as_json:
            files = []
            for dist in dists:
                item: dict[str, Any] = {
                    "filename": dist.filename,
                    "url": self._url(dist),
                    "hashes": {"sha256": dist.sha256},
                    "size": dist.size,
                    "upload-time": dist.upload_time,
                    "yanked": False,
                }
                if dist.requires_python:
                    item["requires-python"] = dist.requires_python
                if advertise and dist.metadata_sha256:
                    item["core-metadata"] = {"sha256": dist.metadata_sha256}
                    item["dist-info-metadata"] = {"sha256": dist.metadata_sha256}
                files.append(item)
            versions = sorted({d.version for d in dists}, key=Version)
            data = {
                "meta": {"api-version": "1.1", "_last-serial": project.serial},
                "name": name,
                "versions": versions,
                "files": files,
            }
            body = json.dumps(data).encode()
        else:
            links = []
            for dist in dists:
                attrs = [f'href="{escape(self._url(dist))}#sha256={dist.sha256}"']
                if dist.requires_python:
                    attrs.append(f'data-requires-python="{escape(dist.requires_python)}"')
                if advertise and dist.metadata_sha256:
                    value = f"sha256={dist.metadata_sha256}"
                    attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
                links.append(f"<a {' '.join(attrs)}>{escape(dist.filename)}</a><br/>")
            body = (
                '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1">'
                f"<title>Links for {name}</title></head><body>\n"
                + "\n".join(links)
                + "\n</body></html>"
            ).encode()
        self._page(body, as_json, project.serial)

    def _file(self, name: str, filename: str) -> None:
        index = self.server.index
        with index.lock:
            project = index.projects.get(canonicalize_name(name))
            dist = project.files.get(filename.removesuffix(".metadata")) if project else None
        if dist is None:
            self._answer(404, b"no such file\n", "text/plain")
            return
        if filename.endswith(".metadata"):
            if not self.server.behaviour.metadata or dist.metadata is None:
                self._answer(404, b"no metadata\n", "text/plain")
            else:
                self._answer(200, dist.metadata, "application/octet-stream")
            return
        wanted = byte_range(self.headers.get("Range"), dist.size)
        if wanted == "416":
            headers = {"Content-Range": f"bytes */{dist.size}"}
            self._answer(416, b"", "application/octet-stream", headers)
            return
        first, last = (0, dist.size - 1) if not isinstance(wanted, tuple) else wanted
        self.send_response(206 if isinstance(wanted, tuple) else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("ETag", f'"{dist.sha256[:24]}"')
        if isinstance(wanted, tuple):
            self.send_header("Content-Range", f"bytes {first}-{last}/{dist.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            with dist.path.open("rb") as source:
                source.seek(first)
                left = last - first + 1
                while left > 0:
                    chunk = source.read(min(CHUNK, left))
                    if not chunk:
                        raise ConnectionError("file shrank")
                    self.server.behaviour.link.send(len(chunk))
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json_api(self, name: str) -> None:
        index = self.server.index
        with index.lock:
            project = index.projects.get(canonicalize_name(name))
            dists = sorted(project.files.values(), key=lambda d: d.serial) if project else []
        if project is None:
            self._answer(404, b'{"message": "Not Found"}', "application/json")
            return
        releases: dict[str, list[dict[str, Any]]] = {}
        for dist in dists:
            releases.setdefault(dist.version, []).append(
                {
                    "filename": dist.filename,
                    "url": self._url(dist),
                    "digests": {"sha256": dist.sha256},
                    "size": dist.size,
                    "yanked": False,
                    "yanked_reason": None,
                    "requires_python": dist.requires_python,
                    "packagetype": "bdist_wheel" if dist.filename.endswith(".whl") else "sdist",
                    "python_version": "py3",
                    "upload_time_iso_8601": dist.upload_time,
                }
            )
        latest = dists[-1].version
        info = {"name": project.name, "version": latest, "summary": project.name}
        body = json.dumps(
            {
                "info": info,
                "releases": releases,
                "urls": releases[latest],
                "last_serial": project.serial,
            }
        ).encode()
        headers = {"X-PyPI-Last-Serial": str(project.serial)}
        self._answer(200, body, "application/json", headers)

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "0")
        payload = self.rfile.read(int(length)) if length.isdigit() else b""
        path = urlsplit(self.path).path
        if path == "/_bench/rescan":
            serial = self.server.index.rescan()
            self._answer(200, f"{serial}\n".encode(), "text/plain")
            return
        self._wait()
        if path.rstrip("/") != "/pypi":
            self._answer(404, b"not found\n", "text/plain")
            return
        try:
            params, method = xmlrpc.client.loads(payload)
            result = self._xmlrpc(method or "", params)
            body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        except Exception as exc:  # a fault answer, as a real XML-RPC server gives
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, f"{type(exc).__name__}: {exc}"))
        self._answer(200, body.encode(), "text/xml")

    def _xmlrpc(self, method: str, params: tuple[Any, ...]) -> Any:
        index = self.server.index
        with index.lock:
            if method == "changelog_last_serial":
                return index.serial
            if method == "list_packages_with_serial":
                return {p.name: p.serial for p in index.projects.values()}
            if method == "changelog_since_serial":
                since = int(params[0])
                return [list(row) for row in index.changelog if row[4] > since][:50_000]
        raise ValueError(f"unknown method {method!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="wheels and sdists to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=30.0, help="wait before each answer")
    parser.add_argument(
        "--handshake-rtts", type=float, default=2.0, help="extra latencies for a new connection"
    )
    parser.add_argument(
        "--bandwidth-mbit", type=float, default=200.0, help="the shared link; 0: no cap"
    )
    parser.add_argument("--no-metadata", action="store_true", help="no PEP 658 metadata")
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000
    behaviour = Behaviour(
        latency=latency,
        handshake=latency * args.handshake_rtts,
        metadata=not args.no_metadata,
        link=Link(args.bandwidth_mbit * 1e6 / 8),
    )
    server = Server((args.host, args.port), Index(args.dir), behaviour)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(f"READY http://{args.host}:{server.server_address[1]}/simple/", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
