from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from proxy.models import DistFile
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, run_pass, stored
from tests.test_prefetch import configure


def verify(fake: FakeUpstream, cache: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "verify",
            "--upstream",
            fake.simple_url,
            "--cache-dir",
            str(cache),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout or "{}")


def test_verify__drops_corrupt_and_repairs_pinned(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    cache = settings.cache_dir
    files = {p.name: p for p in (cache / "files").rglob("*") if p.is_file()}
    corrupt = files["demo-1.0-py3-none-any.whl"]
    corrupt.write_bytes(b"bit rot" + corrupt.read_bytes()[7:])
    files["helper-1.5-py3-none-any.whl"].unlink()
    code, report = verify(upstream, cache)
    assert code == 1, report  # damage found, all of it repaired
    assert report["corrupt"] == 1
    assert report["missing_pinned"] == 1
    assert report["repaired"] == 2
    assert all_whole(cache)
    assert len(stored(cache)) == 6
    code, report = verify(upstream, cache)
    assert code == 0, report
    assert report["ok"] == 6


def test_verify__offline_drops_and_reports(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    cache = settings.cache_dir
    path = next(p for p in (cache / "files").rglob("*.whl"))
    path.write_bytes(b"garbage")
    code, report = verify(upstream, cache, "--offline")
    assert code == 3, report  # a mirrored file is damaged and cannot be fetched again offline
    assert report["dropped"] == 1
    assert not path.exists()
    assert all_whole(cache)


class _Unreadable:
    """Unpickles by calling int("not a number"): a record no version of the code can load."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (int, ("not a number",))


def test_verify__bad_records_and_entries_reported_not_fatal(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    cache = settings.cache_dir
    storage = Storage(cache)
    try:
        record = storage.load_page("demo")
        assert record is not None
        bogus = DistFile(
            "demo-3.0-py3-none-any.whl", "http://127.0.0.1:1/x.whl", {"sha256": "nope"}
        )
        long_name = DistFile("d" * 300 + ".whl", "http://127.0.0.1:1/y.whl", {"sha256": "a" * 64})
        page = dataclasses.replace(record.page, files=(*record.page.files, bogus, long_name))
        storage.save_page(dataclasses.replace(record, page=page, by_filename={}))
        storage.index.set("page:broken", _Unreadable())
    finally:
        storage.close()
    code, report = verify(upstream, cache)
    assert code == 3, report
    assert report["unreadable_records"] == 1
    assert report["unstorable_entries"] == 2
    assert report["ok"] == 6  # every good file was still checked
