"""The changelog followers read, and the XML-RPC answers built from it (no port)."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.changelog import Changelog, page_changes, version_of
from proxy.models import DistFile, ProjectPage
from proxy.serials import BadCall, answer, parse_call
from tests.support.proxy_server import ThreadedProxy


def page(name: str, serial: int | None, *files: str, yanked: tuple[str, ...] = ()) -> ProjectPage:
    return ProjectPage(
        name=name,
        files=tuple(
            DistFile(filename=f, url=f"https://files.example/{f}", yanked=f in yanked)
            for f in files
        ),
        serial=serial,
    )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Changelog]:
    changelog = Changelog(tmp_path / "changelog.sqlite")
    yield changelog
    changelog.close()


def test_version_of__wheels_sdists_and_nonsense() -> None:
    assert version_of("demo-1.0-py3-none-any.whl") == "1.0"
    assert version_of("demo-2.0.tar.gz") == "2.0"
    assert version_of("not a distribution") is None


def test_page_changes__new_release_files_removals_yanks() -> None:
    before = {"demo-1.0-py3-none-any.whl": False, "demo-1.0.tar.gz": False}
    after = page(
        "demo",
        7,
        "demo-1.0-py3-none-any.whl",
        "demo-2.0-py3-none-any.whl",
        yanked=("demo-1.0-py3-none-any.whl",),
    )
    actions = [(c.version, c.action, c.serial) for c in page_changes("demo", before, after, 0)]
    assert actions == [
        ("2.0", "new release", 7),
        ("2.0", "add py3 file demo-2.0-py3-none-any.whl", 7),
        ("1.0", "remove file demo-1.0.tar.gz", 7),
        ("1.0", "yank release", 7),
    ]
    assert page_changes("demo", before, page("demo", None, "x-1.0.tar.gz"), 0) == []


def test_changelog__watermark_hides_rows_of_a_pass_under_way(log: Changelog) -> None:
    log.page_saved("a", page("a", 5, "a-1.0.tar.gz"))
    assert log.last_serial() == 5 and [c.name for c in log.since(0)] == ["a", "a"]
    log.hold()  # a pass begins: what it stores is not final yet
    log.page_saved("b", page("b", 9, "b-1.0.tar.gz"))
    log.page_saved("c", page("c", 7, "c-1.0.tar.gz"))  # stored after b, older serial
    assert log.last_serial() == 5
    assert log.since(5) == []
    log.settle(9)
    assert log.last_serial() == 9
    assert [(c.name, c.serial) for c in log.since(5) if c.action == "new release"] == [
        ("c", 7),
        ("b", 9),
    ]


def test_changelog__older_page_ignored_update_and_removal(log: Changelog) -> None:
    log.page_saved("a", page("a", 5, "a-1.0.tar.gz"))
    assert log.page_saved("a", page("a", 3, "a-0.1.tar.gz")) == 0  # going backwards
    assert log.page_saved("a", page("a", 6, "a-1.0.tar.gz")) == 1  # same files, newer page
    assert log.since(5)[0].action == "update"
    assert log.project_removed("a")
    assert not log.project_removed("never-held")
    last = log.since(6)[-1]
    assert (last.name, last.action, last.serial) == ("a", "remove project", 7)
    assert log.packages_with_serial() == {}


def test_changelog__paging_never_splits_one_serial(log: Changelog) -> None:
    log.page_saved("a", page("a", 1, *(f"a-{i}.0.tar.gz" for i in range(3))))  # 6 rows
    log.page_saved("b", page("b", 2, "b-1.0.tar.gz"))  # 2 rows
    first = log.since(0, limit=7)
    assert {c.serial for c in first} == {1} and len(first) == 6
    assert [c.serial for c in log.since(1, limit=7)] == [2, 2]
    # One serial larger than a page: sent whole, so the follower can move past it.
    assert len(log.since(0, limit=3)) == 6


def test_rebuild__every_project_heard_of_after_any_serial(log: Changelog) -> None:
    assert log.is_empty()
    log.rebuild([page("a", 4, "a-1.0.tar.gz"), page("b", 8, "b-1.0.tar.gz"), page("c", None)])
    assert not log.is_empty()
    assert log.last_serial() == 8
    assert [c.name for c in log.since(5)] == ["b"]
    assert log.packages_with_serial() == {"a": 4, "b": 8}


def _call(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method).encode()


def test_answer__methods_faults_and_bad_calls(log: Changelog) -> None:
    log.page_saved("a", page("a", 5, "a-1.0.tar.gz"))
    result = answer(*parse_call(_call("changelog_last_serial")), log)
    assert xmlrpc.client.loads(result)[0] == (5,)
    loaded = xmlrpc.client.loads(answer(*parse_call(_call("changelog_since_serial", 0)), log))
    rows: Any = loaded[0][0]
    assert rows[0][0] == "a" and rows[0][4] == 5 and len(rows) == 2
    listing = answer(*parse_call(_call("list_packages_with_serial")), log)
    assert xmlrpc.client.loads(listing)[0] == ({"a": 5},)
    for bad in (
        _call("changelog_since_serial", "x"),
        _call("changelog_since_serial"),
        _call("system.shutdown"),
    ):
        with pytest.raises(xmlrpc.client.Fault):
            xmlrpc.client.loads(answer(*parse_call(bad), log))
    for garbage in (b"", b"<methodCall>", b"not xml", b"<a/>" * 20_000):
        with pytest.raises(BadCall):
            parse_call(garbage)


def test_route__hostile_calls_get_4xx_and_the_server_stays_up(proxy: ThreadedProxy) -> None:
    url = proxy.url + "/pypi"
    with httpx.Client(timeout=10) as client:
        assert client.post(url, content=b"<not xml").status_code == 400
        huge = client.post(url, content=b"<a>" + b"x" * 200_000 + b"</a>")
        assert huge.status_code == 413
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b"<methodCall><methodName>&c;</methodName></methodCall>"
        )
        answered = client.post(url, content=bomb)
        assert answered.status_code in (200, 400)
        if answered.status_code == 200:  # expat expands small entities: a fault, not a crash
            with pytest.raises(xmlrpc.client.Fault):
                xmlrpc.client.loads(answered.content)
        assert client.get(url).status_code == 405
        ok = client.post(url, content=_call("changelog_last_serial"))
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/xml")
        assert isinstance(xmlrpc.client.loads(ok.content)[0][0], int)
