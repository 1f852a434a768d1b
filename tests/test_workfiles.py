"""The sweep of tmp/: leftovers of a crash go, a download another process is writing stays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from proxy.workfiles import STALE_PART, WorkFiles


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep__a_running_writers_part_stays_without_its_lock_file(tmp_path: Path) -> None:
    work = WorkFiles(tmp_path)
    key = "a" * 64
    # The downloader removed its lock file while holding it (proxy/locks.py): only the part's
    # name says who writes it. A server's other worker, or verify, sweeping now must keep it.
    live = work.part_path(key, ".part")
    live.write_bytes(b"in progress")
    other = tmp_path / "tmp" / f"{'b' * 64}.{os.getppid()}-00000000.part"
    other.write_bytes(b"another process's download")
    dead = tmp_path / "tmp" / f"{'c' * 64}.{_dead_pid()}-00000000.part"
    dead.write_bytes(b"left by a crash")
    nameless = tmp_path / "tmp" / f"{'d' * 64}.part"
    nameless.write_bytes(b"no writer named")
    assert work.sweep_tmp() == 2
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted([live.name, other.name])


def test_sweep__a_killed_writer_not_yet_reaped_is_no_writer(tmp_path: Path) -> None:
    # A server killed with -9: its workers are zombies until reaped, which may be after the
    # next server's start sweeps (or never, under a container's first process).
    work = WorkFiles(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child should have exited"
        time.sleep(0.01)
    try:
        part = tmp_path / "tmp" / f"{'f' * 64}.{child.pid}-00000000.part"
        part.write_bytes(b"cut by a crash")
        assert work.sweep_tmp() == 1
        assert not part.exists()
    finally:
        child.wait()


def test_sweep__a_part_unwritten_for_long_goes_even_if_its_pid_runs(tmp_path: Path) -> None:
    work = WorkFiles(tmp_path)
    part = work.part_path("e" * 64, ".part")
    part.write_bytes(b"stalled")
    old = time.time() - STALE_PART - 60
    os.utime(part, (old, old))
    assert work.sweep_tmp() == 1
    assert not part.exists()
