"""The rules for replacing a stored page, and the once-a-second generation check, alone."""

from __future__ import annotations

from pathlib import Path

from proxy.generations import CHECK_EVERY, Generations
from proxy.models import DistFile, PageRecord, ProjectListing, ProjectPage
from proxy.render import render_project
from proxy.storage import Storage
from proxy.trust import distrust, distrust_root

SHA = "a" * 64


def record(serial: int | None, *names: str) -> PageRecord:
    files = tuple(DistFile(n, f"https://f.test/{n}", {"sha256": SHA}) for n in names)
    page = ProjectPage(name="demo", files=files, serial=serial)
    return PageRecord("demo", page, render_project(page, "demo"), 0.0)


def test_distrust__serial_lost_or_every_file_gone_without_newer_serial() -> None:
    held = record(10, "demo-1.0.tar.gz", "demo-2.0.tar.gz")
    assert distrust(held, record(None, "demo-1.0.tar.gz").page, ()) is not None
    assert distrust(held, record(11).page, ()) is None  # emptied, vouched by a newer serial
    assert distrust(held, record(10).page, ()) is not None  # same serial, every file gone
    assert distrust(held, record(11, "demo-3.0.tar.gz").page, ()) is None
    # One file dropped at the same serial: a page cut short on the wire (issue 7, round 2).
    assert distrust(held, record(10, "demo-2.0.tar.gz").page, ()) is not None
    assert distrust(held, record(11, "demo-2.0.tar.gz").page, ()) is None  # a newer serial
    grown = record(10, "demo-1.0.tar.gz", "demo-2.0.tar.gz", "x.whl")
    assert distrust(held, grown.page, ()) is None  # a file added, none lost
    unserialed = record(None, "demo-1.0.tar.gz")
    assert distrust(unserialed, record(None).page, ()) is not None
    assert distrust(unserialed, record(None, "demo-1.0.tar.gz", "x.tar.gz").page, ()) is None
    assert distrust(record(10), record(None).page, ()) is not None
    assert distrust(record(None), record(None).page, ()) is None  # nothing held, nothing lost


def test_distrust_root__empty_or_serial_less_listing() -> None:
    held = ProjectListing(projects=(("demo", 1),), serial=5)
    assert distrust_root(held, ProjectListing(projects=())) is not None
    assert distrust_root(held, ProjectListing(projects=(("demo", 1),))) is not None
    assert distrust_root(held, ProjectListing(projects=(("x", 2),), serial=6)) is None


def test_generations__checked_at_most_once_a_second(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    now = [100.0]
    watch = Generations(storage, lambda: 1, clock=lambda: now[0])
    try:
        assert not watch.unchanged("demo")  # never seen: not trusted
        watch.saw("demo", storage.generation("demo"))
        assert watch.unchanged("demo")
        storage.mark_changed("demo")
        assert watch.unchanged("demo")  # within the second: no read
        now[0] += CHECK_EVERY
        assert not watch.unchanged("demo")
        watch.saw("demo", storage.generation("demo"))
        now[0] += CHECK_EVERY
        assert watch.unchanged("demo")
        files = watch.files()
        storage.mark_files_changed()
        assert watch.files() == files
        now[0] += CHECK_EVERY
        assert watch.files() == files + 1
    finally:
        storage.close()
