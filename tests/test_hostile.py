"""Hostile clients: a 4xx, never a file outside the cache, never a 500, and the server stays up."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy

SECRET = "top-secret-outside-the-cache"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedProxy, Path]]:
    from proxy.settings import load_settings
    from tests.support.wheels import make_wheel

    root = tmp_path_factory.mktemp("hostile")
    (root / "secret.txt").write_text(SECRET)
    with FakeUpstream() as fake:
        fake.add_dist("demo", make_wheel("demo", "1.0"))
        settings = load_settings(
            None, {}, {"upstream": fake.simple_url, "cache_dir": root / "cache", "retries": 0}
        )
        with ThreadedProxy(settings) as proxy:
            httpx.get(proxy.url + "/files/demo/demo-1.0-py3-none-any.whl")
            yield proxy, root


def raw(proxy: ThreadedProxy, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; read one response (status 0: closed without one)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            return 0, b""
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except ConnectionResetError:
            pass
    if not data.startswith(b"HTTP/"):
        return 0, b""
    return int(data.split(b" ", 2)[1]), data


TRAVERSALS = [
    "/files/demo/../../secret.txt",
    "/files/demo/..%2F..%2F..%2Fsecret.txt",
    "/files/demo/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/files/demo/..%252F..%252Fsecret.txt",
    "/files/demo/%c0%ae%c0%ae%c0%afsecret.txt",
    "/files/demo/..\\..\\secret.txt",
    "/files/demo/....//....//secret.txt",
    "/files/..%2F..%2F/demo-1.0-py3-none-any.whl",
    "/files/demo/demo-1.0-py3-none-any.whl%00.txt",
    "/files/demo/%00",
    "/simple/..%2F..%2Fsecret.txt/",
    "/simple/%00/",
    "/simple/" + "a" * 5000 + "/",
    "/files/demo/" + "b" * 5000 + ".whl",
    "//etc/passwd",
    "/files/demo//etc/passwd",
    "/simple/demo/?format=" + "x" * 10000,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths__4xx_never_outside(served: tuple[ThreadedProxy, Path], path: str) -> None:
    proxy, _root = served
    status, body = raw(proxy, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 0 or 300 <= status < 500 or status == 406, (path, status)
    assert SECRET.encode() not in body
    assert httpx.get(proxy.url + "/health").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"accept": "garbage/;;;q=x,,,*"},
        {"accept": "text/html;q=" + "9" * 500},
        {"accept": "x" * 20000},
        {"range": "bytes=a-b"},
        {"range": "bytes=-"},
        {"range": "bytes=99999999999999999999-"},
        {"range": "bytes=" + "0-1," * 2000},
        {"if-range": "\x01\x02"},
        {"if-none-match": '"' + "x" * 5000},
        {"accept-encoding": "gzip;q=nonsense"},
    ],
)
def test_bad_headers__never_500(
    served: tuple[ThreadedProxy, Path], headers: dict[str, str]
) -> None:
    proxy, _root = served
    for path in ("/simple/demo/", "/files/demo/demo-1.0-py3-none-any.whl", "/simple/"):
        try:
            response = httpx.get(proxy.url + path, headers=headers, timeout=10)
        except httpx.HTTPError:
            continue  # the server refused the request outright
        assert response.status_code < 500, (path, headers, response.status_code)
    assert httpx.get(proxy.url + "/health").status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /simple/demo/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /simple/d\xffmo/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /simple/demo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"DELETE /files/demo/demo-1.0-py3-none-any.whl HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /simple/demo/ HTTP/1.1\r\n" + b"H: v\r\n" * 5000 + b"\r\n",
    ],
)
def test_malformed_requests__4xx_or_closed(
    served: tuple[ThreadedProxy, Path], request_bytes: bytes
) -> None:
    proxy, _root = served
    status, _body = raw(proxy, request_bytes)
    assert status == 0 or 400 <= status < 500, status
    assert httpx.get(proxy.url + "/health").status_code == 200


def test_admin__needs_the_token(served: tuple[ThreadedProxy, Path]) -> None:
    proxy, _root = served
    assert httpx.post(proxy.url + "/admin/forget/demo").status_code == 403
