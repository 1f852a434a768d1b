"""The routes without a port: starlette's TestClient over create_app, its upstream an httpx
MockTransport (the HTTP clients the runtime makes are swapped for ones on that transport, so
everything above them, from the guard's URL checks up, is the real code)."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

import proxy.runtime
from proxy.settings import load_settings
from proxy.web.app import create_app

UPSTREAM = "http://127.0.0.1:9/simple/"  # never reached: the transport answers
with warnings.catch_warnings():
    # This starlette would rather have the httpx2 fork; the TestClient works the same on the
    # httpx the project already depends on, and one test module is no reason for a new one.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
WHEEL = "demo-1.0-py3-none-any.whl"
BYTES = b"route test wheel " * 500


@dataclass
class FakeIndex:
    files: dict[str, bytes] = field(default_factory=lambda: {WHEEL: BYTES})
    down: bool = False
    asked: Counter[str] = field(default_factory=Counter)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked[request.url.path] += 1
        if self.down:
            return httpx.Response(503)
        if request.url.path == "/simple/demo/":
            entries = [
                {
                    "filename": name,
                    "url": f"/dist/{name}",
                    "hashes": {"sha256": hashlib.sha256(body).hexdigest()},
                    "size": len(body),
                }
                for name, body in self.files.items()
            ]
            page = {"meta": {"api-version": "1.1", "_last-serial": 7}, "name": "demo"}
            body = json.dumps({**page, "files": entries}).encode()
            return httpx.Response(200, content=body, headers={"content-type": JSON_TYPE})
        name = request.url.path.rsplit("/", 1)[-1]
        if request.url.path.startswith("/dist/") and name in self.files:
            data = self.files[name]
            headers = {"content-length": str(len(data))}
            return httpx.Response(200, stream=httpx.ByteStream(data), headers=headers)
        return httpx.Response(404)


@pytest.fixture
def fake() -> FakeIndex:
    return FakeIndex()


@pytest.fixture
def client(
    tmp_path: Path, fake: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    def on_transport(*_args: Any, **_kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(fake))

    monkeypatch.setattr(proxy.runtime, "make_http_client", on_transport)
    settings = load_settings(
        None, {}, {"upstream": UPSTREAM, "cache_dir": tmp_path / "cache", "retries": 0}
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_page__negotiated_json_and_html(client: TestClient, fake: FakeIndex) -> None:
    as_json = client.get("/simple/demo/", headers={"accept": JSON_TYPE})
    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith(JSON_TYPE)
    assert [f["filename"] for f in as_json.json()["files"]] == [WHEEL]
    assert as_json.json()["files"][0]["url"].endswith(f"/files/demo/{WHEEL}")
    as_html = client.get("/simple/demo/", headers={"accept": "text/html"})
    assert as_html.headers["content-type"].startswith("text/html")
    assert WHEEL in as_html.text
    assert fake.asked["/simple/demo/"] == 1  # the second answer came from the cache
    refused = client.get("/simple/demo/", headers={"accept": "image/png"})
    assert refused.status_code == 406


def test_page__odd_name_redirected(client: TestClient) -> None:
    answer = client.get("/simple/Demo/", follow_redirects=False)
    assert answer.status_code == 301 and answer.headers["location"] == "/simple/demo/"


def test_file__miss_then_hit_counted_once_each(client: TestClient, fake: FakeIndex) -> None:
    first = client.get(f"/files/demo/{WHEEL}")
    assert first.status_code == 200 and first.content == BYTES
    second = client.get(f"/files/demo/{WHEEL}")
    assert second.status_code == 200 and second.content == BYTES
    assert second.headers["etag"] == f'"{hashlib.sha256(BYTES).hexdigest()}"'
    assert fake.asked[f"/dist/{WHEEL}"] == 1
    stats = client.get("/stats").json()
    assert stats["files"] == {"hits": 1, "misses": 1}


def test_file__head_and_range_miss_is_one_miss(client: TestClient, fake: FakeIndex) -> None:
    head = client.head(f"/files/demo/{WHEEL}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(BYTES))
    assert head.headers["accept-ranges"] == "bytes"
    assert fake.asked[f"/dist/{WHEEL}"] == 0  # the page's size: nothing fetched
    # This upstream ignores ranges: the Range waits for the whole file, one miss.
    ranged = client.get(f"/files/demo/{WHEEL}", headers={"range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == BYTES[:10]
    assert fake.asked[f"/dist/{WHEEL}"] == 2  # the ranged read it answered whole, then the fill
    hit = client.get(f"/files/demo/{WHEEL}", headers={"range": "bytes=5-9"})
    assert hit.status_code == 206 and hit.content == BYTES[5:10]
    assert client.get("/stats").json()["files"] == {"hits": 1, "misses": 2}


@pytest.mark.parametrize(
    "path",
    [
        "/files/demo/zz/" + WHEEL,  # a variant that is not a hash
        "/files/-demo-/" + WHEEL,  # not a project name
        "/files/demo/.hidden.whl",  # not a file name the mirror stores
    ],
)
def test_file__bad_names_are_400(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 400


def test_file__unlisted_is_404(client: TestClient, fake: FakeIndex) -> None:
    answer = client.get("/files/demo/demo-9.0-py3-none-any.whl")
    assert answer.status_code == 404
    assert fake.asked["/dist/demo-9.0-py3-none-any.whl"] == 0  # never asked upstream


def test_upstream_down__502_and_the_server_stays_up(client: TestClient, fake: FakeIndex) -> None:
    fake.down = True
    assert client.get("/simple/demo/").status_code == 502
    assert client.get(f"/files/demo/{WHEEL}").status_code == 502
    fake.down = False
    assert client.get(f"/files/demo/{WHEEL}").content == BYTES


def test_file__hits_from_disk_then_from_memory(client: TestClient) -> None:
    """The hits are read from disk, then from the memory tier once hot (proxy.memfiles);
    whole, by range and HEAD alike."""
    for _ in range(4):  # the miss, a hit from disk, the hit that reads it into memory, one from it
        assert client.get(f"/files/demo/{WHEEL}").content == BYTES
    ranged = client.get(f"/files/demo/{WHEEL}", headers={"range": "bytes=5-9"})
    assert ranged.status_code == 206 and ranged.content == BYTES[5:10]
    assert ranged.headers["content-range"] == f"bytes 5-9/{len(BYTES)}"
    assert client.head(f"/files/demo/{WHEEL}").headers["content-length"] == str(len(BYTES))
