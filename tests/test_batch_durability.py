"""Durability per batch (proxy/batchsync.py): a prefetch pass syncs the filesystem once per
batch instead of once per file, and a crash before a batch is settled costs a re-check of the
files its journal names, never a damaged file kept."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.batchsync import BatchJournal, recover
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, stored
from tests.support.wheels import make_wheel

REPO = Path(__file__).resolve().parent.parent
PROJECTS = 60


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}


def _journaled(journals: Path) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for path in journals.glob("*.journal"):
        for line in path.read_text().splitlines():
            sha, _, filename = line.partition(" ")
            entries.append((sha, filename))
    return entries


def test_journal__admitted_names_listed_until_settled(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path / "journal", files=2, seconds=3600)
    journal.admit("a" * 64, "one-1.0-py3-none-any.whl")
    assert journal.committed() is False
    journal.admit("b" * 64, "two-1.0-py3-none-any.whl")
    assert journal.committed() is True  # two files: a batch is due
    assert sorted(_journaled(tmp_path / "journal")) == [
        ("a" * 64, "one-1.0-py3-none-any.whl"),
        ("b" * 64, "two-1.0-py3-none-any.whl"),
    ]
    journal.settle()
    assert list((tmp_path / "journal").glob("*.journal")) == []
    assert journal.committed() is False  # the count starts again


def test_recover__drops_wrong_bytes_keeps_good_and_leaves_live_journals(tmp_path: Path) -> None:
    files = {"good.whl": b"good bytes", "bad.whl": b"bad bytes"}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    store = {name: data for name, data in files.items()}
    store["bad.whl"] = b"\0" * len(files["bad.whl"])  # renamed, bytes lost: same size
    crashed = tmp_path / "journal"
    crashed.mkdir()
    (crashed / "1-dead.journal").write_text(
        "".join(f"{digests[n]} {n}\n" for n in files) + "c" * 64 + " gone.whl\n"
    )
    live = BatchJournal(crashed)
    live.admit("d" * 64, "live.whl")  # a running pass's journal: locked, not to be touched
    checked: list[str] = []

    def check(sha: str, filename: str) -> bool:
        checked.append(filename)
        data = store.get(filename)
        if data is None or hashlib.sha256(data).hexdigest() == sha:
            return False
        del store[filename]
        return True

    assert recover(crashed, check) == 1
    assert sorted(checked) == ["bad.whl", "gone.whl", "good.whl"]
    assert sorted(store) == ["good.whl"]
    assert not (crashed / "1-dead.journal").exists()
    assert [p.name for p in crashed.glob("*.journal")] != []  # the live one stays
    live.settle()


@pytest.mark.e2e
def test_kill9_mid_pass__every_stored_file_whole_after_restart(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """kill -9 while a batch is unsettled, its files' bytes lost as a power cut could lose them
    (same size, wrong bytes): the next start checks what the journal names and drops the
    damaged copies, and the pass fetches them again (a held file missing) and completes, with
    every stored file whole."""
    for i in range(PROJECTS):
        upstream.add_dist(f"p{i}", make_wheel(f"p{i}", "1.0"))
    upstream.delay = 0.03
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "proxy", "prefetch", "--upstream", upstream.simple_url]
    command += ["--cache-dir", str(cache)]
    journals = cache / "state" / "journal"
    process = subprocess.Popen(
        command, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    damaged: list[Path] = []
    try:
        deadline = time.monotonic() + 60
        while not damaged:
            assert process.poll() is None, "the pass ended before a batch could be caught"
            assert time.monotonic() < deadline, "no unsettled batch seen"
            time.sleep(0.01)
            os.kill(process.pid, signal.SIGSTOP)  # the journal cannot change while we look
            for sha, filename in _journaled(journals):
                path = cache / "files" / sha[:2] / sha / filename
                if path.is_file():
                    path.write_bytes(b"\0" * path.stat().st_size)
                    damaged.append(path)
            if not damaged:
                os.kill(process.pid, signal.SIGCONT)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not all_whole(cache)  # the crash left damage for the restart to find
    upstream.delay = 0.0
    again = subprocess.run(
        command, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert all_whole(cache)
    assert "stored files an interrupted pass left damaged" in again.stderr
    names = stored(cache)
    for i in range(PROJECTS):
        assert f"p{i}-1.0-py3-none-any.whl" in names
    for path in damaged:
        assert path.is_file()  # fetched again, whole
