"""Hostile clients: a 4xx, never a file outside the cache, never a 500, and the server stays up."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.raw_http import RawConnection, request_bytes

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
    """A whole 4xx answer: not a redirect (which a client would follow), not a dropped
    connection, and nothing of the secret or of a cached file in it."""
    proxy, root = served
    with RawConnection(proxy.url) as conn:
        reply = conn.send(request_bytes("GET", path, [(b"host", b"x")]))
    assert 400 <= reply.status < 500, (path, reply.status, reply.raw[:200])
    assert b"location" not in reply.headers
    assert SECRET.encode() not in reply.raw
    assert not reply.raw.partition(b"\r\n\r\n")[2].startswith(b"PK")  # no wheel either
    assert (root / "secret.txt").read_text() == SECRET
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
    """Sent as raw bytes (httpx would refuse the control bytes before sending, which used to
    count as a pass): each path answers a whole response below 500; a dropped connection fails."""
    proxy, _root = served
    sent = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    with RawConnection(proxy.url) as conn:
        for path in ("/simple/demo/", "/files/demo/demo-1.0-py3-none-any.whl", "/simple/"):
            reply = conn.send(request_bytes("GET", path, [(b"host", b"x"), *sent]))
            assert 200 <= reply.status < 500, (path, headers, reply.status, reply.raw[:200])
    assert httpx.get(proxy.url + "/health").status_code == 200


@pytest.mark.parametrize(
    "sent",
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
def test_malformed_requests__4xx(served: tuple[ThreadedProxy, Path], sent: bytes) -> None:
    # An answer, not a silent close: a client must be able to tell what was wrong.
    proxy, _root = served
    with RawConnection(proxy.url) as conn:
        status = conn.send(sent).status
    assert 400 <= status < 500, status
    assert httpx.get(proxy.url + "/health").status_code == 200


def test_admin__needs_the_token(served: tuple[ThreadedProxy, Path]) -> None:
    proxy, _root = served
    assert httpx.post(proxy.url + "/admin/forget/demo").status_code == 403


# Every byte: the C0 controls, DEL and all of Latin-1's upper half (which str.isdigit() and
# friends partly accept, int() does not), and printable ASCII for the separators (, ; = " * -).
ODD_BYTES = [bytes([b]) for b in range(0x100)]
TOKEN = b"tok-fuzz"
WHEEL_PATH = "/files/demo/demo-1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedProxy]:
    """A proxy with authentication and an admin token, so that every header the app reads is
    read: the page and the file are cached, so answers come from the fast path and the disk."""
    import bcrypt

    from proxy.settings import load_settings
    from tests.support.wheels import make_wheel

    root = tmp_path_factory.mktemp("guarded")
    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    with FakeUpstream() as fake:
        fake.add_dist("demo", make_wheel("demo", "1.0"))
        values = {
            "upstream": fake.simple_url,
            "cache_dir": root / "cache",
            "retries": 0,
            "auth_tokens": [TOKEN.decode()],
            "auth_htpasswd": str(root / "htpasswd"),
            "admin_token": "adm-fuzz",
        }
        with ThreadedProxy(load_settings(None, {}, values)) as proxy:
            bearer = {"authorization": "Bearer " + TOKEN.decode()}
            assert httpx.get(proxy.url + "/simple/demo/", headers=bearer).status_code == 200
            assert httpx.get(proxy.url + WHEEL_PATH, headers=bearer).status_code == 200
            yield proxy


def _b64(data: bytes) -> bytes:
    import base64

    return base64.b64encode(data)


# (method, path, the header fuzzed, templates with X where the odd byte goes, other headers)
_BEARER = (b"authorization", b"Bearer " + TOKEN)
FUZZ_CASES: list[tuple[str, str, bytes, list[bytes], list[tuple[bytes, bytes]]]] = [
    ("GET", WHEEL_PATH, b"range", [b"bytes=X-", b"bytes=0-X", b"bytes=-X", b"X"], [_BEARER]),
    ("HEAD", WHEEL_PATH, b"range", [b"bytes=X-"], [_BEARER]),
    ("GET", WHEEL_PATH, b"if-range", [b'"X"', b"X"], [_BEARER, (b"range", b"bytes=0-9")]),
    (
        "GET",
        "/simple/demo/",
        b"accept",
        [b"X", b"application/vnd.pypi.simple.v1+json;q=X"],
        [_BEARER],
    ),
    ("HEAD", "/simple/demo/", b"accept", [b"X", b"text/X"], [_BEARER]),
    ("GET", "/simple/", b"accept", [b"X"], [_BEARER]),
    ("GET", "/simple/demo/", b"accept-encoding", [b"X", b"gzip;q=X"], [_BEARER]),
    ("HEAD", "/simple/demo/", b"accept-encoding", [b"X"], [_BEARER]),
    ("GET", "/simple/demo/", b"if-none-match", [b'"X"', b'W/"X"', b"X"], [_BEARER]),
    ("HEAD", "/simple/demo/", b"if-none-match", [b'"X"'], [_BEARER]),
    (
        "GET",
        "/simple/demo/",
        b"authorization",
        [b"X", b"Basic X", b"Bearer X", b"Basic " + _b64(b"alice:X"), b"Basic " + _b64(b"X:p")],
        [],
    ),
    ("GET", "/", b"host", [b"X", b"localhost:X"], [_BEARER]),
    ("GET", "/simple/Demo/", b"host", [b"X"], [_BEARER]),
    ("POST", "/admin/forget/nothing-here", b"x-admin-token", [b"X"], [_BEARER]),
    ("GET", WHEEL_PATH, b"user-agent", [b"X"], [_BEARER]),
]


@pytest.mark.parametrize(
    ("method", "path", "name", "templates", "others"),
    FUZZ_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2].decode()}" for c in FUZZ_CASES],
)
def test_header_bytes__every_odd_byte_answered_below_500(
    guarded: ThreadedProxy,
    method: str,
    path: str,
    name: bytes,
    templates: list[bytes],
    others: list[tuple[bytes, bytes]],
) -> None:
    """Each odd byte in each place gets a whole response with a status below 500: a 500, a
    dropped connection or a timeout all count as failures."""
    failures: list[tuple[bytes, int]] = []
    statuses: Counter[int] = Counter()
    with RawConnection(guarded.url, timeout=10) as conn:
        for template in templates:
            for odd in ODD_BYTES:
                value = template.replace(b"X", odd)
                headers = [] if name == b"host" else [(b"host", b"localhost")]
                headers += [(k, v) for k, v in others if k != name] + [(name, value)]
                reply = conn.send(request_bytes(method, path, headers), head_only=method == "HEAD")
                statuses[reply.status] += 1
                if not 100 <= reply.status < 500:
                    failures.append((value, reply.status))
    assert failures == [], failures[:20]
    # The requests were well formed: most bytes reached the app rather than the HTTP parser's
    # 400 (which refuses only the controls), so the app's parsing of them was tried.
    assert sum(n for status, n in statuses.items() if status != 400) > 200 * len(templates)
    assert httpx.get(guarded.url + "/health").status_code == 200
