"""The fake upstream itself: the other tests are only as good as it is."""

from __future__ import annotations

import hashlib
import xmlrpc.client
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.wheels import make_sdist, make_wheel

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        upstream.add_dist("demo", make_wheel("demo", "1.0"), requires_python=">=3.8")
        upstream.add_dist("demo", make_sdist("demo", "1.0"), with_metadata=False)
        yield upstream


def test_pages__json_html_redirect_404(fake: FakeUpstream) -> None:
    page = httpx.get(fake.simple_url + "demo/", headers={"accept": JSON})
    assert page.headers["content-type"] == JSON
    data = page.json()
    assert data["versions"] == ["1.0"]
    assert data["files"][0]["requires-python"] == ">=3.8"
    assert "core-metadata" not in data["files"][1]
    html = httpx.get(fake.simple_url + "demo/")
    assert html.headers["content-type"].startswith("text/html")
    assert b'data-requires-python="&gt;=3.8"' in html.content
    assert httpx.get(fake.simple_url + "Demo/").status_code == 301
    assert httpx.get(fake.simple_url + "nope/").status_code == 404
    again = httpx.get(
        fake.simple_url + "demo/", headers={"accept": JSON, "if-none-match": page.headers["etag"]}
    )
    assert again.status_code == 304


def test_files__bytes_metadata_and_faults(fake: FakeUpstream) -> None:
    built = make_wheel("demo", "1.0")
    url = f"{fake.base_url}/files/demo/{built.filename}"
    assert hashlib.sha256(httpx.get(url).content).hexdigest() == built.sha256
    assert httpx.get(url + ".metadata").content == built.metadata
    fake.corrupt_files = True
    assert hashlib.sha256(httpx.get(url).content).hexdigest() != built.sha256
    fake.corrupt_files = False
    fake.truncate_files = True
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    fake.truncate_files = False
    fake.status_override = 503
    assert httpx.get(url).status_code == 503
    fake.status_override = None
    fake.down = True
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)


def test_auth_switch(fake: FakeUpstream) -> None:
    fake.auth = ("u", "p")
    assert httpx.get(fake.simple_url).status_code == 401
    assert httpx.get(fake.simple_url, auth=("u", "p")).status_code == 200


def test_json_api_and_xmlrpc(fake: FakeUpstream) -> None:
    api = httpx.get(f"{fake.base_url}/pypi/demo/json").json()
    assert api["info"]["version"] == "1.0"
    assert len(api["releases"]["1.0"]) == 2
    with xmlrpc.client.ServerProxy(f"{fake.base_url}/pypi") as rpc:
        assert rpc.changelog_last_serial() == fake.serial
        assert rpc.list_packages_with_serial() == {"demo": fake.serial}
        fake.xmlrpc_page_size = 1
        rows = rpc.changelog_since_serial(0)
        assert isinstance(rows, list)
        assert len(rows) == 1
        assert rows[0][0] == "demo"
        fake.xmlrpc_refuse = True
        with pytest.raises(xmlrpc.client.ProtocolError):
            rpc.changelog_last_serial()


def test_wheels_install_with_real_pip(tmp_path: object, fake: FakeUpstream) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.proxy_server import client_env

    assert isinstance(tmp_path, Path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--index-url",
            fake.simple_url,
            "--target",
            str(tmp_path / "t"),
            "demo",
        ],
        env=client_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "demo" / "__init__.py").exists()
