"""The fake upstream and the built distributions themselves: the other tests are only as good as
they are."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xmlrpc.client
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.wheels import make_sdist, make_wheel

JSON = "application/vnd.pypi.simple.v1+json"
PIP_ACCEPT = f"{JSON}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
WHEEL = make_wheel("demo", "1.0", requires_python=">=3.8")
SDIST = make_sdist("demo", "1.0")


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        upstream.add_dist("demo", WHEEL, requires_python=">=3.8")
        upstream.add_dist("demo", SDIST, with_metadata=False)
        upstream.add_dist("demo", make_wheel("demo", "10.0"), yanked="broken <build>")
        upstream.add_dist("demo", make_wheel("demo", "2.0"), upload_time="2024-05-06T07:08:09Z")
        yield upstream


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, trust_env=False) as http:
        yield http


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: dict[str, dict[str, str | None]] = {}
        self._attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs = dict(attrs) if tag == "a" else None

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self.anchors[data] = self._attrs
            self._attrs = None


def anchors(html: str) -> dict[str, dict[str, str | None]]:
    parser = _Anchors()
    parser.feed(html)
    return parser.anchors


# -- the distributions -------------------------------------------------------------------------


def test_make_wheel__record_metadata_and_determinism() -> None:
    built = make_wheel("My.Pkg_name", "1.2", requires=["dep>=1"], payload_size=300_000)
    assert built.filename == "my_pkg_name-1.2-py3-none-any.whl"
    assert built.sha256 == hashlib.sha256(built.content).hexdigest()
    assert built.metadata_sha256 == hashlib.sha256(built.metadata).hexdigest()
    assert built == make_wheel("My.Pkg_name", "1.2", requires=["dep>=1"], payload_size=300_000)
    assert len(built.content) > 300_000  # the payload does not compress
    with zipfile.ZipFile(io.BytesIO(built.content)) as archive:
        info = "my_pkg_name-1.2.dist-info"
        assert archive.read(f"{info}/METADATA") == built.metadata
        assert b"Requires-Dist: dep>=1\n" in built.metadata
        assert archive.read("my_pkg_name/__init__.py") == b'__version__ = "1.2"\n'
        rows = archive.read(f"{info}/RECORD").decode().splitlines()
        assert sorted(r.split(",")[0] for r in rows) == sorted(archive.namelist())
        for row in rows:
            path, digest, size = row.split(",")
            if path.endswith("RECORD"):
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))


def test_make_sdist__deterministic_with_pkg_info() -> None:
    built = make_sdist("My.Pkg", "3.0", requires_python=">=3.9")
    assert built.filename == "my_pkg-3.0.tar.gz"
    assert built.content == make_sdist("My.Pkg", "3.0", requires_python=">=3.9").content
    with tarfile.open(fileobj=io.BytesIO(built.content)) as archive:
        member = archive.extractfile("my_pkg-3.0/PKG-INFO")
        assert member is not None
        assert member.read() == built.metadata
    assert b"Requires-Python: >=3.9" in built.metadata


# -- pages -------------------------------------------------------------------------------------


def test_root__negotiated_json_html_and_format_query(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.add_project("empty")
    page = client.get("/simple/", headers={"accept": PIP_ACCEPT})
    assert page.headers["content-type"] == JSON
    assert page.headers["x-pypi-last-serial"] == str(fake.serial)
    data = page.json()
    assert data["meta"] == {"api-version": "1.1", "_last-serial": fake.serial}
    assert {p["name"] for p in data["projects"]} == {"demo", "empty"}
    html = client.get("/simple/")
    assert html.headers["content-type"].startswith("text/html")
    assert '<a href="demo/">demo</a>' in html.text
    assert client.get("/simple/", headers={"accept": "text/html, */*"}).text == html.text
    as_html = client.get(
        "/simple/", params={"format": "text/html"}, headers={"accept": JSON}
    ).headers
    assert as_html["content-type"].startswith("text/html")
    assert client.get("/simple/", params={"format": JSON}).headers["content-type"] == JSON


def test_html_only_and_json_only_switches(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.html_only = True
    page = client.get("/simple/demo/", headers={"accept": JSON})
    assert page.headers["content-type"].startswith("text/html")
    fake.html_only, fake.json_only = False, True
    assert client.get("/simple/demo/").headers["content-type"] == JSON
    assert client.get("/simple/").headers["content-type"] == JSON


def test_project_json__pep_691_fields(fake: FakeUpstream, client: httpx.Client) -> None:
    data = client.get("/simple/demo/", headers={"accept": PIP_ACCEPT}).json()
    assert data["meta"] == {"api-version": "1.1", "_last-serial": fake.serial}
    assert data["name"] == "demo"
    assert data["versions"] == ["1.0", "2.0", "10.0"]  # by version, not as text
    files = {f["filename"]: f for f in data["files"]}
    wheel = files[WHEEL.filename]
    assert wheel == {
        "filename": WHEEL.filename,
        "url": f"{fake.base_url}/files/demo/{WHEEL.filename}",
        "hashes": {"sha256": WHEEL.sha256},
        "requires-python": ">=3.8",
        "yanked": False,
        "core-metadata": {"sha256": WHEEL.metadata_sha256},
        "size": len(WHEEL.content),
        "upload-time": "2024-01-01T00:00:00.000000Z",
    }
    assert "core-metadata" not in files[SDIST.filename]
    assert "requires-python" not in files[SDIST.filename]
    assert files["demo-10.0-py3-none-any.whl"]["yanked"] == "broken <build>"
    assert files["demo-2.0-py3-none-any.whl"]["upload-time"] == "2024-05-06T07:08:09Z"


def test_project_html__pep_503_anchors(fake: FakeUpstream, client: httpx.Client) -> None:
    page = client.get("/simple/demo/", headers={"accept": "text/html"})
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<meta name="pypi:repository-version" content="1.1">' in page.text
    assert 'data-requires-python="&gt;=3.8"' in page.text
    found = anchors(page.text)
    wheel = found[WHEEL.filename]
    assert wheel["href"] == f"{fake.base_url}/files/demo/{WHEEL.filename}#sha256={WHEEL.sha256}"
    assert wheel["data-requires-python"] == ">=3.8"
    assert wheel["data-core-metadata"] == f"sha256={WHEEL.metadata_sha256}"
    assert wheel["data-dist-info-metadata"] == wheel["data-core-metadata"]
    assert "data-yanked" not in wheel
    assert "data-core-metadata" not in found[SDIST.filename]
    assert found["demo-10.0-py3-none-any.whl"]["data-yanked"] == "broken <build>"


def test_redirects_and_404(client: httpx.Client) -> None:
    for path, target in [
        ("/simple/Demo/", "/simple/demo/"),
        ("/simple/demo", "/simple/demo/"),
        ("/simple/My_Pkg..x/", "/simple/my-pkg-x/"),
        ("/simple", "/simple/"),
        ("/simple/Demo/?format=text/html", "/simple/demo/?format=text/html"),
    ]:
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (301, target), path
    assert client.get("/simple/Demo", follow_redirects=True).status_code == 200
    assert client.get("/simple/nope/").status_code == 404
    assert client.get("/files/demo/nope-1.0.tar.gz").status_code == 404
    assert client.get("/files/nope/nope-1.0.tar.gz").status_code == 404
    assert client.get("/elsewhere").status_code == 404


def test_etag__304_until_the_page_changes(fake: FakeUpstream, client: httpx.Client) -> None:
    first = client.get("/simple/demo/", headers={"accept": JSON})
    etag = first.headers["etag"]
    assert etag.startswith('"')
    for tag in (etag, f'"other", W/{etag}', "*"):
        again = client.get("/simple/demo/", headers={"accept": JSON, "if-none-match": tag})
        assert (again.status_code, again.content) == (304, b""), tag
        assert again.headers["etag"] == etag
    html_etag = client.get("/simple/demo/").headers["etag"]
    assert html_etag != etag
    fake.add_dist("demo", make_wheel("demo", "3.0"))
    changed = client.get("/simple/demo/", headers={"accept": JSON, "if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    fake.no_etag = True
    plain = client.get("/simple/demo/", headers={"if-none-match": "*"})
    assert plain.status_code == 200
    assert "etag" not in plain.headers


def test_relative_urls__resolve_against_the_page() -> None:
    with FakeUpstream(relative_urls=True) as upstream, httpx.Client(trust_env=False) as client:
        upstream.add_dist("demo", WHEEL)
        page_url = upstream.simple_url + "demo/"
        data = client.get(page_url, headers={"accept": JSON}).json()
        url = data["files"][0]["url"]
        assert url == f"../../files/demo/{WHEEL.filename}"
        assert client.get(httpx.URL(page_url).join(url)).content == WHEEL.content
        href = anchors(client.get(page_url).text)[WHEEL.filename]["href"]
        assert href is not None
        assert href.startswith("../../files/demo/")


def test_stale_serial_for__reported_in_header_and_meta(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    fake.stale_serial_for["Demo"] = 2  # any spelling of the name
    page = client.get("/simple/demo/", headers={"accept": JSON})
    assert page.headers["x-pypi-last-serial"] == "2"
    assert page.json()["meta"]["_last-serial"] == 2
    assert client.get("/simple/demo/").headers["x-pypi-last-serial"] == "2"
    fake.stale_serial_for.clear()
    page = client.get("/simple/demo/", headers={"accept": JSON})
    assert page.json()["meta"]["_last-serial"] == fake.serial


def test_mutations__yank_remove_and_serials(fake: FakeUpstream, client: httpx.Client) -> None:
    before = fake.serial
    fake.yank("demo", WHEEL.filename, "bad")
    fake.remove_file("demo", "demo-2.0-py3-none-any.whl")
    assert fake.serial == before + 2
    data = client.get("/simple/demo/", headers={"accept": JSON}).json()
    assert data["versions"] == ["1.0", "10.0"]
    assert {f["filename"]: f["yanked"] for f in data["files"]}[WHEEL.filename] == "bad"
    fake.yank("demo", WHEEL.filename)
    assert anchors(client.get("/simple/demo/").text)[WHEEL.filename]["data-yanked"] == ""
    fake.remove_project("demo")
    assert client.get("/simple/demo/").status_code == 404
    assert client.get(f"/files/demo/{WHEEL.filename}").status_code == 404
    assert fake.serial == before + 4


# -- files -------------------------------------------------------------------------------------


def test_files__bytes_head_metadata_and_ranges(client: httpx.Client) -> None:
    path = f"/files/demo/{WHEEL.filename}"
    got = client.get(path)
    assert got.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(got.content).hexdigest() == WHEEL.sha256
    head = client.head(path)
    assert (head.content, head.headers["content-length"]) == (b"", str(len(WHEEL.content)))
    metadata = client.get(path + ".metadata").content
    assert hashlib.sha256(metadata).hexdigest() == WHEEL.metadata_sha256
    assert client.get(f"/files/demo/{SDIST.filename}").content == SDIST.content
    assert client.get(f"/files/demo/{SDIST.filename}.metadata").status_code == 404
    size = len(WHEEL.content)
    part = client.get(path, headers={"range": "bytes=0-9"})
    assert (part.status_code, part.content) == (206, WHEEL.content[:10])
    assert part.headers["content-range"] == f"bytes 0-9/{size}"
    tail = client.get(path, headers={"range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, WHEEL.content[-10:])
    beyond = client.get(path, headers={"range": f"bytes={size}-"})
    assert (beyond.status_code, beyond.headers["content-range"]) == (416, f"bytes */{size}")
    assert client.get(path, headers={"range": "bytes=oops"}).status_code == 200


def test_faults__corrupt_and_truncated_files(fake: FakeUpstream, client: httpx.Client) -> None:
    path = f"/files/demo/{WHEEL.filename}"
    fake.corrupt_files = True
    body = client.get(path).content
    assert len(body) == len(WHEEL.content)
    assert hashlib.sha256(body).hexdigest() != WHEEL.sha256
    fake.corrupt_files = False
    fake.truncate_files = True
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(path)
    assert client.head(path).headers["content-length"] == str(len(WHEEL.content))
    fake.truncate_files = False
    assert client.get(path).content == WHEEL.content


def test_faults__down_status_delay_and_auth(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.down = True
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/simple/")
    assert fake.count("/simple/") == 1  # seen, never answered
    fake.down = False
    for status in (500, 503, 429):
        fake.status_override = status
        assert client.get("/simple/demo/").status_code == status
        assert client.post("/pypi", content=b"<x/>").status_code == status
    fake.status_override = None
    fake.delay = 0.3
    started = time.monotonic()
    assert client.get("/simple/").status_code == 200
    assert time.monotonic() - started >= 0.3
    fake.delay = 0
    fake.auth = ("user", "secret")
    refused = client.get("/simple/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/simple/", auth=("user", "wrong")).status_code == 401
    assert client.get("/simple/", auth=("user", "secret")).status_code == 200


def test_request_log(fake: FakeUpstream, client: httpx.Client) -> None:
    client.get("/simple/demo/?x=1", headers={"X-Custom": "Yes"})
    client.head(f"/files/demo/{WHEEL.filename}")
    first = fake.requests[0]
    assert (first.method, first.path, first.headers["x-custom"]) == (
        "GET",
        "/simple/demo/?x=1",
        "Yes",
    )
    assert fake.count("/simple/demo/") == 1
    assert (fake.count("/files/"), fake.count("/files/", "HEAD")) == (0, 1)
    fake.reset_log()
    assert fake.requests == []


def ask(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    return connection.getresponse().status


def test_keep_alive__faulted_post_then_get_on_one_connection(fake: FakeUpstream) -> None:
    port = int(fake.base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        fake.status_override = 503
        connection.request("POST", "/pypi", body=b"x" * 1000)
        assert connection.getresponse().read() == b"fault switch\n"
        fake.status_override = None
        for _ in range(2):  # the unread POST body must not garble these
            connection.request("GET", "/simple/demo/")
            answer = connection.getresponse()
            assert (answer.status, answer.getheader("content-type")) == (
                200,
                "text/html; charset=utf-8",
            )
            answer.read()
        started = time.monotonic()
        fake.stop()  # must not wait for the client to hang up
        assert time.monotonic() - started < 5
        with pytest.raises((http.client.HTTPException, OSError)):
            ask(connection, "/simple/demo/")
    finally:
        connection.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(fake.simple_url, trust_env=False)


# -- the JSON API and XML-RPC ------------------------------------------------------------------


def test_json_api(fake: FakeUpstream, client: httpx.Client) -> None:
    answer = client.get("/pypi/Demo/json")
    assert answer.headers["x-pypi-last-serial"] == str(fake.serial)
    api = answer.json()
    assert api["info"]["version"] == "2.0"  # 10.0 is yanked
    assert api["last_serial"] == fake.serial
    assert sorted(api["releases"]) == ["1.0", "10.0", "2.0"]
    one = {f["filename"]: f for f in api["releases"]["1.0"]}
    assert one[WHEEL.filename]["digests"] == {"sha256": WHEEL.sha256}
    assert one[WHEEL.filename]["requires_python"] == ">=3.8"
    assert one[SDIST.filename]["packagetype"] == "sdist"
    ten = api["releases"]["10.0"][0]
    assert (ten["yanked"], ten["yanked_reason"]) == (True, "broken <build>")
    assert [f["filename"] for f in api["urls"]] == ["demo-2.0-py3-none-any.whl"]
    assert client.get("/pypi/nope/json").status_code == 404


def test_xmlrpc__serials_paging_and_actions(fake: FakeUpstream) -> None:
    fake.yank("demo", WHEEL.filename, "old")
    fake.remove_file("demo", SDIST.filename)
    fake.add_project("gone")
    fake.remove_project("gone")
    with xmlrpc.client.ServerProxy(f"{fake.base_url}/pypi") as rpc:
        assert rpc.changelog_last_serial() == fake.serial
        assert rpc.list_packages_with_serial() == {"demo": fake.serial - 2}
        fake.xmlrpc_page_size = 3
        rows: list[list[object]] = []
        since = 0
        while page := rpc.changelog_since_serial(since):
            assert isinstance(page, list)
            assert len(page) <= 3
            rows += page
            last = page[-1][4]
            assert isinstance(last, int)
            since = last
        assert [row[4] for row in rows] == list(range(1, fake.serial + 1))
        actions = [(row[0], row[1], row[3]) for row in rows]
        assert actions[:3] == [
            ("demo", None, "create"),
            ("demo", "1.0", "new release"),
            ("demo", "1.0", f"add py3 file {WHEEL.filename}"),
        ]
        assert ("demo", "1.0", f"add source file {SDIST.filename}") in actions
        assert actions[-4:] == [
            ("demo", "1.0", "yank release"),
            ("demo", "1.0", f"remove file {SDIST.filename}"),
            ("gone", None, "create"),
            ("gone", None, "remove project"),
        ]
        assert all(isinstance(row[2], int) for row in rows)
        with pytest.raises(xmlrpc.client.Fault):
            rpc.no_such_method()
        fake.xmlrpc_refuse = True
        with pytest.raises(xmlrpc.client.ProtocolError) as refused:
            rpc.changelog_last_serial()
        assert refused.value.errcode == 405


# -- real installers ---------------------------------------------------------------------------


def installer_env(tmp: Path) -> dict[str, str]:
    """This machine's pip configuration (find-links, extra indexes) must not leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "UV_CACHE_DIR": str(tmp / "uv-cache"),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return env


def uv_command() -> list[str]:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    return [found] if Path(found).exists() else [sys.executable, "-m", "uv"]


def pip(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pip", "install", *args], tmp)


def uv(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([*uv_command(), "pip", "install", "--python", sys.executable, *args], tmp)


def _run(command: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=installer_env(tmp), capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def links(tmp_path: Path) -> Path:
    folder = tmp_path / "links"
    folder.mkdir()
    for built in (
        make_wheel("Demo.App", "1.0", requires=["helper>=1"], requires_python=">=3.8"),
        make_wheel("helper", "1.5", payload_size=100_000),
    ):
        (folder / built.filename).write_bytes(built.content)
    return folder


def assert_installed(target: Path) -> None:
    assert (target / "demo_app" / "__init__.py").read_text() == '__version__ = "1.0"\n'
    assert (target / "helper" / "payload.bin").stat().st_size == 100_000
    assert (target / "demo_app-1.0.dist-info" / "METADATA").exists()


def test_pip_installs_a_made_wheel(tmp_path: Path, links: Path) -> None:
    target = tmp_path / "target"
    result = pip(
        tmp_path, "--no-index", "--find-links", str(links), "--target", str(target), "demo-app"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_installed(target)


def test_uv_installs_a_made_wheel(tmp_path: Path, links: Path) -> None:
    target = tmp_path / "target"
    result = uv(
        tmp_path, "--no-index", "--find-links", str(links), "--target", str(target), "demo-app"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_installed(target)


def test_pip_and_uv_install_through_the_fake_index(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        upstream.add_dist("demo-app", make_wheel("Demo.App", "1.0", requires=["helper>=1"]))
        upstream.add_dist("helper", make_wheel("helper", "1.5", payload_size=100_000))
        index = ("--index-url", upstream.simple_url)
        by_pip = pip(tmp_path, *index, "--target", str(tmp_path / "pip"), "Demo.App")
        assert by_pip.returncode == 0, by_pip.stdout + by_pip.stderr
        assert_installed(tmp_path / "pip")
        by_uv = uv(tmp_path, *index, "--target", str(tmp_path / "uv"), "Demo.App")
        assert by_uv.returncode == 0, by_uv.stdout + by_uv.stderr
        assert_installed(tmp_path / "uv")
        # Both found the project page and fetched the files through the fake.
        assert upstream.count("/simple/demo-app/") >= 2
        assert upstream.count("/files/helper/helper-1.5-py3-none-any.whl") >= 2
