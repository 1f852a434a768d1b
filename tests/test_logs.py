"""Log lines: JSON for shippers, the access log in Apache's combined format, every upstream
fetch, and never an upstream credential, in either format."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from proxy.evict import evict
from proxy.logs import JsonFormatter
from proxy.storage import Storage
from proxy.web.accesslog import AccessLog
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy

USER, PASSWORD = "mirror-user", "s3cr3t-Pa55"
COMBINED = re.compile(
    r"^(?P<host>\S+) - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>(?:[^"\\]|\\.)*)"$'
)


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "proxy.test", "levelno": 20, "levelname": "INFO"})
    record.msg, record.args = message, ()
    record.__dict__.update(extra)
    return record


def test_json_formatter__one_object_per_line_with_extras() -> None:
    line = JsonFormatter().format(_record("two\nlines", status=200, url="http://h/simple/"))
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "two\nlines"
    assert data["level"] == "info" and data["logger"] == "proxy.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
    assert data["status"] == 200 and data["url"] == "http://h/simple/"


def test_json_formatter__exception_is_a_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in data["exception"]


def _app() -> Starlette:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/hello", hello)])


def _get(app: AccessLog, *requests: tuple[str, dict[bytes, bytes]]) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path, headers in requests:
                await client.get(path, headers=headers)

    anyio.run(main)


def test_access_log__combined_format(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        _get(
            AccessLog(_app()),
            ("/hello?x=1", {b"User-Agent": b"pip/24.0", b"Referer": b"http://r/"}),
            ("/missing", {}),
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.access"]
    assert len(lines) == 2
    first = COMBINED.match(lines[0])
    assert first is not None, lines[0]
    assert first["path"] == "/hello?x=1" and first["status"] == "200"
    assert first["bytes"] == "5" and first["agent"] == "pip/24.0"
    assert first["referer"] == "http://r/"
    second = COMBINED.match(lines[1])
    assert second is not None and second["status"] == "404"
    record = next(r for r in caplog.records if r.name == "proxy.access")
    assert record.__dict__["status"] == 200 and record.__dict__["bytes"] == 5


def test_access_log__client_text_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    agent = 'evil" 200 1 "x\u00e9\x7f'
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        _get(AccessLog(_app()), ("/hello", {b"User-Agent": agent.encode()}))
    line = next(r.getMessage() for r in caplog.records if r.name == "proxy.access")
    match = COMBINED.match(line)
    assert match is not None, line
    assert match["agent"] == 'evil\\" 200 1 \\"x\\xc3\\xa9\\x7f'
    assert match["status"] == "200"


def _with_credentials(upstream: FakeUpstream) -> str:
    upstream.auth = (USER, PASSWORD)
    return upstream.simple_url.replace("://", f"://{USER}:{PASSWORD}@", 1)


def _exercise(proxy: SubprocessProxy) -> None:
    page = httpx.get(
        proxy.url + "/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert page.status_code == 200
    url = page.json()["files"][0]["url"]
    assert httpx.get(httpx.URL(proxy.url + "/simple/demo/").join(url)).status_code == 200


def test_logs_json__every_line_an_object_no_credentials(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream_url = _with_credentials(upstream)
    with SubprocessProxy(
        "--upstream",
        upstream_url,
        "--log-format",
        "json",
        "--access-log",
        cache_dir=tmp_path / "cache",
    ) as proxy:
        _exercise(proxy)
    text = proxy.log()
    assert PASSWORD not in text and USER not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "proxy.access"]
    pages = [r for r in access if r["path"] == "/simple/demo/"]
    assert pages and pages[0]["status"] == 200 and pages[0]["bytes"] > 0
    assert pages[0]["method"] == "GET" and pages[0]["ms"] >= 0
    fetches = [r for r in records if r["logger"] == "proxy.upstream" and "ms" in r]
    assert {r["status"] for r in fetches} == {200}
    assert any(r["url"].endswith("/simple/demo/") for r in fetches)
    assert any(r["url"].endswith(".whl") and r["bytes"] > 0 for r in fetches)
    # The startup line names the upstream, redacted (the password goes as Basic auth only).
    assert any("upstream http://***@127.0.0.1:" in r["message"] for r in records)


def test_logs_text__combined_access_lines_no_credentials(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream_url = _with_credentials(upstream)
    with SubprocessProxy(
        "--upstream", upstream_url, "--access-log", cache_dir=tmp_path / "cache"
    ) as proxy:
        _exercise(proxy)
    text = proxy.log()
    assert PASSWORD not in text and USER not in text
    access = [line.split(": ", 1)[1] for line in text.splitlines() if " proxy.access: " in line]
    assert any((m := COMBINED.match(line)) and m["path"] == "/simple/demo/" for line in access)
    assert re.search(r"proxy\.upstream: upstream GET http://\*\*\*@\S+/simple/demo/: 200, ", text)


def test_eviction__logged_with_files_and_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = Storage(tmp_path / "cache")
    try:
        for i in range(4):
            part = storage.part_path(f"k{i}", ".part")
            part.write_bytes(bytes([i]) * 1000)
            sha = hashlib.sha256(part.read_bytes()).hexdigest()
            storage.commit(part, sha, f"f{i}-1.0-py3-none-any.whl")
        with caplog.at_level(logging.INFO, logger="proxy.evict"):
            done = evict(storage, 2500)
    finally:
        storage.close()
    assert done.files == 2 and done.bytes == 2000, done
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.evict"]
    assert lines == ["evicted 2 files (2000 bytes) to stay under 2500 bytes"], lines
