from __future__ import annotations

import pytest

from proxy.models import HTML_V1, JSON_V1, TEXT_HTML
from proxy.negotiate import choose

PIP = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP, JSON_V1),
        (UV, JSON_V1),
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/html", TEXT_HTML),
        ("text/*", TEXT_HTML),
        ("application/*", JSON_V1),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        ("application/vnd.pypi.simple.v1+html", HTML_V1),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4", TEXT_HTML),
        ("application/vnd.pypi.simple.v1+json;q=0, */*;q=0.1", TEXT_HTML),
        ("text/html, application/xhtml+xml, */*;q=0.8", TEXT_HTML),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", JSON_V1),
    ],
)
def test_choose__follows_q_values_and_specificity(accept: str | None, expected: str) -> None:
    assert choose(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "image/png",
        "application/vnd.pypi.simple.v2+json",
        "text/html;q=0",
        "garbage",
        "text/html;q=abc",
        "a" * 5000,
    ],
)
def test_choose__nothing_acceptable_is_none(accept: str) -> None:
    assert choose(accept) is None


def test_choose__format_param_overrides_header() -> None:
    assert choose("text/html", "application/vnd.pypi.simple.v1+json") == JSON_V1
    assert choose(PIP, "text/html") == TEXT_HTML
