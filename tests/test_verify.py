from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert code == 0, report
    assert report["corrupt"] == 1
    assert report["missing_pinned"] == 1
    assert report["repaired"] == 2
    assert all_whole(cache)
    assert len(stored(cache)) == 6
    code, report = verify(upstream, cache)
    assert report["ok"] == 6


def test_verify__offline_drops_and_reports(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = configure(tmp_path, upstream)
    assert run_pass(settings).ok
    cache = settings.cache_dir
    path = next(p for p in (cache / "files").rglob("*.whl"))
    path.write_bytes(b"garbage")
    code, report = verify(upstream, cache, "--offline")
    assert code == 1
    assert report["dropped"] == 1
    assert not path.exists()
    assert all_whole(cache)
