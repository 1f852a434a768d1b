from __future__ import annotations

import pytest

from proxy.names import is_safe_filename, is_sha256, is_valid_project_name, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Requests", "requests"),
        ("zope.interface", "zope-interface"),
        ("Foo__Bar--baz..QUX", "foo-bar-baz-qux"),
        ("a", "a"),
    ],
)
def test_normalize__pep503(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("name", ["requests", "Zope.Interface", "a", "a1-b_c.d"])
def test_is_valid_project_name__accepts_pep508_names(name: str) -> None:
    assert is_valid_project_name(name)


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "..", "a/b", "a\x00b", "a b", "ä", "x" * 201, "%2e%2e"]
)
def test_is_valid_project_name__refuses_the_rest(name: str) -> None:
    assert not is_valid_project_name(name)


@pytest.mark.parametrize(
    "filename", ["", ".", "..", ".hidden", "a/b.whl", "a\\b.whl", "a\x00.whl", "x" * 256, "a\nb"]
)
def test_is_safe_filename__refuses_path_tricks(filename: str) -> None:
    assert not is_safe_filename(filename)


def test_is_safe_filename__accepts_local_versions() -> None:
    assert is_safe_filename("pkg-1.0+local.1-py3-none-any.whl")


def test_is_sha256() -> None:
    assert is_sha256("a" * 64)
    assert not is_sha256("A" * 64)
    assert not is_sha256("a" * 63)


def test_project_of__wheels_sdists_metadata_and_older_names() -> None:
    from proxy.names import packages_path, project_of

    assert project_of("Foo_Bar-1.0-py3-none-any.whl") == "foo-bar"
    assert project_of("foo_bar-1.0-py3-none-any.whl.metadata") == "foo-bar"
    assert project_of("zope.interface-6.0.tar.gz") == "zope-interface"
    assert project_of("foo-bar-1.0.win32.exe") == "foo-bar"
    assert project_of("nameless") is None
    sha = "ab" * 32
    assert packages_path(sha, "x-1.0.tar.gz") == f"ab/ab/{sha[4:]}/x-1.0.tar.gz"
