"""Hostile upstream pages: the parsers never crash, never keep a non-http(s) link or an unsafe
filename, and what they keep always renders."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import UpstreamBadResponse
from proxy.models import ProjectPage
from proxy.names import is_safe_filename
from proxy.origins import host_allowed
from proxy.parse import parse_project_html, parse_project_json, parse_root_html, parse_root_json
from proxy.render import render_project

PAGE = "https://index.test/simple/demo/"
URLS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "ftp://x/y.whl",
            "data:text/plain,hi",
            "//evil.test/x.whl",
            "../../../../etc/passwd",
            "https://files.test/a b.whl",
            "http://[::1]:99999/x",
            "https://user:pw@files.test/x.whl",
            "\x00://x",
            "https:x",
        ]
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=15), children, max_size=4)
    ),
    max_leaves=15,
)
FILE_ITEM = st.fixed_dictionaries(
    {
        "filename": st.one_of(st.text(max_size=30), st.sampled_from(["../x.whl", "a/b.whl", ".x"])),
        "url": URLS,
    },
    optional={
        "hashes": JSONISH,
        "yanked": JSONISH,
        "requires-python": JSONISH,
        "size": JSONISH,
        "core-metadata": JSONISH,
        "dist-info-metadata": JSONISH,
        "upload-time": JSONISH,
        "provenance": JSONISH,
        "gpg-sig": JSONISH,
    },
)


def check(page: ProjectPage) -> None:
    for f in page.files:
        assert f.url.startswith(("http://", "https://"))
        assert is_safe_filename(f.filename)
    rendered = render_project(page, "demo")
    data = json.loads(rendered.json.raw)
    assert "dist-info-metadata" not in json.dumps(data)
    for item in data["files"]:
        assert item["url"].startswith("../../files/demo/")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"files": st.lists(FILE_ITEM, max_size=5)},
        optional={"meta": JSONISH, "name": JSONISH, "versions": JSONISH, "project-status": JSONISH},
    )
)
def test_json_pages(data: dict[str, Any]) -> None:
    try:
        page = parse_project_json(json.dumps(data).encode(), PAGE)
    except UpstreamBadResponse:
        return
    check(page)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSONISH.map(lambda v: json.dumps(v).encode())))
def test_json_garbage(body: bytes) -> None:
    for parse in (lambda b: parse_project_json(b, PAGE), parse_root_json):
        with contextlib.suppress(UpstreamBadResponse):
            parse(body)


ATTRS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "href",
                "data-yanked",
                "data-requires-python",
                "data-core-metadata",
                "data-dist-info-metadata",
                "data-provenance",
                "data-gpg-sig",
                "onclick",
            ]
        ),
        st.one_of(URLS, st.text(max_size=20)),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ATTRS, st.text(max_size=30)), max_size=6), st.text(max_size=50))
def test_html_pages(anchors: list[tuple[list[tuple[str, str]], str]], noise: str) -> None:
    from html import escape

    parts = [noise]
    for attrs, text in anchors:
        rendered = " ".join(f'{k}="{escape(v)}"' for k, v in attrs)
        parts.append(f"<a {rendered}>{escape(text)}</a>")
    body = ("<html><body>" + "".join(parts)).encode()
    check(parse_project_html(body, PAGE, "demo"))
    parse_root_html(body)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_html_garbage(body: bytes) -> None:
    check(parse_project_html(body, PAGE, "demo"))


def test_allowed_hosts() -> None:
    assert host_allowed("https://index.test/f/x.whl", PAGE, ["files.test"])
    assert host_allowed("https://files.test/x.whl", PAGE, ["files.test"])
    assert host_allowed("https://a.cdn.test/x.whl", PAGE, ["*.cdn.test"])
    assert not host_allowed("https://evil.test/x.whl", PAGE, ["files.test"])
    assert not host_allowed("https://files.test.evil/x.whl", PAGE, ["files.test"])
