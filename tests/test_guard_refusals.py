"""A head over the limit that arrives whole in one read is refused once, by one party: the
app's answer and the guard's refusal never both write to one connection."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy

pytestmark = pytest.mark.e2e


def test_big_head_in_one_send__one_clean_431_no_traceback(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=tmp_path / "c") as proxy:
        for count in (3000, 14000, 14000):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                head = b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * count
                sock.sendall(head + b"\r\n")
                sock.settimeout(5)
                answer = b""
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
            assert answer.count(b"HTTP/1.1 ") == 1, answer
        time.sleep(0.5)
        log = proxy.log()
    assert "Traceback" not in log, log
