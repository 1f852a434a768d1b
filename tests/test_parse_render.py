from __future__ import annotations

import json

from proxy.models import DistFile, ProjectListing, ProjectPage
from proxy.parse import parse_project_html, parse_project_json, parse_root_html, parse_root_json
from proxy.render import file_href, render_project, render_root, root_html

PAGE_URL = "https://index.test/simple/demo/"
SHA = "a" * 64
META_SHA = "b" * 64

UPSTREAM_JSON = {
    "meta": {"api-version": "1.4", "_last-serial": 42},
    "name": "demo",
    "versions": ["1.0", "2.0+local"],
    "project-status": {"status": "archived", "reason": "moved"},
    "alternate-locations": ["https://elsewhere.test/"],
    "files": [
        {
            "filename": "demo-1.0.tar.gz",
            "url": "https://files.test/demo-1.0.tar.gz",
            "hashes": {"sha256": SHA},
            "requires-python": ">=3.8",
            "yanked": "broken build",
            "size": 123,
            "upload-time": "2024-01-01T00:00:00.000000Z",
            "provenance": "https://index.test/integrity/demo/1.0/demo-1.0.tar.gz/provenance",
        },
        {
            "filename": "demo-2.0+local-py3-none-any.whl",
            "url": "../../files/demo-2.0%2Blocal-py3-none-any.whl",
            "hashes": {"sha256": SHA},
            "dist-info-metadata": {"sha256": META_SHA},
            "yanked": False,
            "size": 456,
            "gpg-sig": False,
            "x-custom": 1,
        },
        {"filename": "evil.whl", "url": "file:///etc/passwd", "hashes": {}},
        {"filename": "../evil.whl", "url": "https://files.test/evil.whl", "hashes": {}},
        {"filename": "js.whl", "url": "javascript:alert(1)", "hashes": {}},
        "not a file",
    ],
}


def test_parse_project_json__keeps_every_field_and_drops_unsafe_links() -> None:
    page = parse_project_json(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    assert page.serial == 42
    assert page.api_version == "1.4"
    assert page.versions == ("1.0", "2.0+local")
    assert page.project_status == {"status": "archived", "reason": "moved"}
    assert page.extra == {"alternate-locations": ["https://elsewhere.test/"]}
    assert [f.filename for f in page.files] == [
        "demo-1.0.tar.gz",
        "demo-2.0+local-py3-none-any.whl",
    ]
    sdist, wheel = page.files
    assert sdist.yanked == "broken build"
    assert sdist.requires_python == ">=3.8"
    assert sdist.size == 123 and sdist.upload_time == "2024-01-01T00:00:00.000000Z"
    assert sdist.provenance is not None
    assert wheel.url == "https://index.test/files/demo-2.0%2Blocal-py3-none-any.whl"
    assert wheel.core_metadata == {"sha256": META_SHA}
    assert wheel.gpg_sig is False
    assert wheel.extra == {"x-custom": 1}


def test_render_project_json__rewrites_urls_and_never_emits_dist_info_metadata() -> None:
    page = parse_project_json(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    rendered = render_project(page, "demo")
    data = json.loads(rendered.json.raw)
    assert data["meta"] == {"api-version": "1.4", "_last-serial": 42}
    assert data["project-status"] == {"status": "archived", "reason": "moved"}
    assert data["alternate-locations"] == ["https://elsewhere.test/"]
    sdist, wheel = data["files"]
    assert sdist["url"] == "../../files/demo/demo-1.0.tar.gz"
    assert sdist["yanked"] == "broken build"
    assert sdist["requires-python"] == ">=3.8"
    assert wheel["url"] == "../../files/demo/demo-2.0%2Blocal-py3-none-any.whl"
    assert wheel["core-metadata"] == {"sha256": META_SHA}
    assert wheel["x-custom"] == 1
    assert b"dist-info-metadata" not in rendered.json.raw
    assert b"files.test" not in rendered.json.raw


def test_html_round_trip__keeps_what_clients_read() -> None:
    page = parse_project_json(json.dumps(UPSTREAM_JSON).encode(), PAGE_URL)
    html = render_project(page, "demo").html.raw
    again = parse_project_html(html, "http://proxy.test/simple/demo/", "demo")
    assert again.api_version == "1.4"
    assert again.project_status == {"status": "archived", "reason": "moved"}
    sdist, wheel = again.files
    assert sdist.url == "http://proxy.test/files/demo/demo-1.0.tar.gz"
    assert sdist.sha256 == SHA
    assert sdist.requires_python == ">=3.8"
    assert sdist.yanked == "broken build"
    assert wheel.filename == "demo-2.0+local-py3-none-any.whl"
    assert wheel.core_metadata == {"sha256": META_SHA}
    assert wheel.yanked is False


def test_parse_project_html__pep503_page() -> None:
    html = b"""<!DOCTYPE html><html><head>
    <meta name="pypi:repository-version" content="1.1"></head><body>
    <a href="https://files.test/p/demo-1.0.tar.gz#sha256=%s" data-requires-python="&gt;=3.7"
       data-yanked="">demo-1.0.tar.gz</a>
    <a href="/p/demo-1.1-py3-none-any.whl#sha256=%s"
       data-dist-info-metadata="true">demo-1.1-py3-none-any.whl</a>
    <a href="ftp://files.test/x.whl">x.whl</a>
    <a>no href</a>
    </body></html>""" % (SHA.encode(), SHA.encode())
    page = parse_project_html(html, PAGE_URL, "demo")
    assert page.api_version == "1.1"
    assert page.versions == ("1.0", "1.1")
    sdist, wheel = page.files
    assert sdist.requires_python == ">=3.7"
    assert sdist.yanked is True
    assert sdist.hashes == {"sha256": SHA}
    assert wheel.url == "https://index.test/p/demo-1.1-py3-none-any.whl"
    assert wheel.core_metadata is True


def test_root__json_and_html() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 7},
            "projects": [{"name": "Demo_Pkg", "_last-serial": 3}, {"name": "other"}, {"x": 1}],
        }
    ).encode()
    listing = parse_root_json(body)
    assert listing.serial == 7
    assert listing.projects == (("Demo_Pkg", 3), ("other", None))
    html = root_html(listing)
    assert b'<a href="demo-pkg/">Demo_Pkg</a>' in html
    assert parse_root_html(html).projects == (("Demo_Pkg", None), ("other", None))
    rendered = render_root(listing)
    assert json.loads(rendered.json.raw)["projects"][0] == {"name": "Demo_Pkg", "_last-serial": 3}


def test_rendered_bodies__gzip_and_stable_etag() -> None:
    import gzip

    page = ProjectPage(name="demo", files=(DistFile("demo-1.0.tar.gz", "https://f.test/x"),))
    first, second = render_project(page, "demo"), render_project(page, "demo")
    assert gzip.decompress(first.json.gz) == first.json.raw
    assert first.json.etag == second.json.etag != first.html.etag
    assert render_root(ProjectListing(projects=())).html.raw.startswith(b"<!DOCTYPE html>")


def test_file_href__percent_encodes() -> None:
    assert file_href("demo", "demo-1.0+a b.whl") == "../../files/demo/demo-1.0%2Ba%20b.whl"


def test_parse__entries_that_cannot_be_stored_are_dropped_and_noted() -> None:
    long_name = "demo-" + "\u00e9" * 127 + "x.tar.gz"  # 140 characters, 267 bytes
    good = {"filename": "demo-1.0.tar.gz", "url": "https://files.test/a", "hashes": {"sha256": SHA}}
    data = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [
            good,
            {"filename": "demo-2.0.tar.gz", "url": "https://f.test/b", "hashes": {"sha256": "x"}},
            {"filename": long_name, "url": "https://files.test/c", "hashes": {"sha256": SHA}},
            {
                "filename": "demo-3.0-py3-none-any.whl",
                "url": "https://files.test/d",
                "hashes": {"sha256": SHA},
                "core-metadata": {"sha256": "not-hex"},
            },
            {"filename": "demo-4.0.tar.gz", "url": "https://files.test/e", "hashes": {}},
        ],
    }
    dropped: list[str] = []
    page = parse_project_json(json.dumps(data).encode(), PAGE_URL, dropped)
    assert [f.filename for f in page.files] == [
        "demo-1.0.tar.gz",
        "demo-3.0-py3-none-any.whl",
        "demo-4.0.tar.gz",  # no hash at all: learnt when downloaded, as before
    ]
    assert page.files[1].core_metadata is False
    assert len(dropped) == 3
    html = (
        f'<a href="https://files.test/a#sha256={SHA}">demo-1.0.tar.gz</a>'
        '<a href="https://files.test/b#sha256=not-a-hash">demo-2.0.tar.gz</a>'
        f'<a href="https://files.test/c#sha256={SHA}">{long_name}</a>'
    ).encode()
    dropped = []
    parsed = parse_project_html(html, PAGE_URL, "demo", dropped)
    assert [f.filename for f in parsed.files] == ["demo-1.0.tar.gz"]
    assert len(dropped) == 2
    assert parse_project_html(html, PAGE_URL, "demo").files == parsed.files  # no list: same


def test_serial__numeric_string_accepted() -> None:
    page = dict(UPSTREAM_JSON, meta={"api-version": "1.1", "_last-serial": "37059094"})
    assert parse_project_json(json.dumps(page).encode(), PAGE_URL).serial == 37059094
    root = {"meta": {"_last-serial": "9"}, "projects": [{"name": "a", "_last-serial": "7"}]}
    listing = parse_root_json(json.dumps(root).encode())
    assert listing.serial == 9 and listing.projects == (("a", 7),)
    for odd in ("-3", "1e5", "²", "", "12 "):
        page = dict(UPSTREAM_JSON, meta={"_last-serial": odd})
        assert parse_project_json(json.dumps(page).encode(), PAGE_URL).serial is None


def test_requires_python_null__passes_through_as_null() -> None:
    entry = {"filename": "demo-1.0.tar.gz", "url": "https://files.test/demo-1.0.tar.gz"}
    page = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [dict(entry, **{"requires-python": None}), entry],
    }
    parsed = parse_project_json(json.dumps(page).encode(), PAGE_URL)
    files = json.loads(render_project(parsed, "demo").json.raw)["files"]
    assert "requires-python" in files[0] and files[0]["requires-python"] is None
    assert "requires-python" not in files[1]


def test_hostile_json__deep_nesting_is_a_bad_response_not_a_crash() -> None:
    from proxy.errors import UpstreamBadResponse

    deep = b'{"files":' * 9000 + b"[]" + b"}" * 9000
    for parse in (lambda: parse_project_json(deep, PAGE_URL), lambda: parse_root_json(deep)):
        try:
            parse()
        except UpstreamBadResponse:
            continue
        raise AssertionError("a page nested 9,000 deep must be refused as a bad response")


def test_lone_surrogates__rendered_escaped_never_an_error() -> None:
    page = dict(UPSTREAM_JSON, name="demo\ud800")
    page["files"] = [dict(UPSTREAM_JSON["files"][0], yanked="bad \udc80")]  # type: ignore[index]
    parsed = parse_project_json(json.dumps(page).encode(), PAGE_URL)
    rendered = render_project(parsed, "demo")
    again = json.loads(rendered.json.raw)  # still valid JSON, and the same text
    assert again["name"] == "demo\ud800" and again["files"][0]["yanked"] == "bad \udc80"
    assert b"&#56448;" in rendered.html.raw  # U+DC80 as a character reference
    listing = parse_root_json(json.dumps({"projects": [{"name": "x\ud800"}]}).encode())
    root = render_root(listing)
    assert json.loads(root.json.raw)["projects"][0]["name"] == "x\ud800"
    root.html.raw.decode("utf-8")
