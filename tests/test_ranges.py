from __future__ import annotations

import pytest

from proxy.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=90-", ByteRange(90, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("bytes=50-5000", ByteRange(50, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("items=0-5", None),
        ("bytes=0-1, 5-6", None),
    ],
)
def test_parse_range__single_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=100-",
        "bytes=200-300",
        "bytes=-0",
        "bytes=9-3",
        "bytes=a-b",
        "bytes=",
        "bytes=--1",
        "bytes=1",
        "bytes=" + "9" * 2000,
        "bytes=\xb2-",  # Latin-1 superscript two: isdigit() says yes, int() says no
        "bytes=0-\xb9",
        "bytes=-\xb3",
        "bytes=\u0661-",  # Arabic-Indic one: int() would take it, HTTP does not
        "bytes=1_0-",
        "bytes=+1-",
    ],
)
def test_parse_range__unsatisfiable_or_malformed(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_parse_range__empty_file_has_no_suffix_range() -> None:
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=-5", 0)


def test_if_range__strong_etag_or_date_only() -> None:
    assert if_range_allows(None, '"x"', "d")
    assert if_range_allows('"x"', '"x"', "d")
    assert not if_range_allows('"y"', '"x"', "d")
    assert not if_range_allows('W/"x"', '"x"', "d")
    assert if_range_allows("d", '"x"', "d")
    assert not if_range_allows("e", '"x"', "d")
