"""What the command line prints: one progress line per event, and quiet under `| head`."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefetch.progress import PassProgress
from tests.support.fake_upstream import FakeUpstream

REPO = Path(__file__).resolve().parent.parent
PROXY = [sys.executable, "-m", "proxy"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}


def test_progress__one_event_gives_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="prefetch"):
        plain = PassProgress(1, stream=io.StringIO(), tty=False)
        plain.advance(files=2)
        plain.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "prefetch"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("1/1 projects, 2 files")


def test_progress__finish_shows_what_no_line_has_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="prefetch"):
        plain = PassProgress(3, stream=io.StringIO(), tty=False)
        plain.advance()
        plain.advance()
        plain.finish()
    lines = [r.getMessage() for r in caplog.records if r.name == "prefetch"]
    assert [line.split(" ", 1)[0] for line in lines] == ["2/3"]


def test_prefetch_command__progress_line_printed_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "prefetch",
            "--upstream",
            upstream.simple_url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--project",
            "helper",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if "1/1 projects" in line]
    assert len(progress) == 1, done.stderr
    assert "prefetch: synced helper (2 files added)" in done.stderr  # each step logged


def test_stats_into_head__no_traceback(tmp_path: Path, upstream: FakeUpstream) -> None:
    cache = tmp_path / "cache"
    subprocess.run(
        [*PROXY, "prefetch", "--upstream", upstream.simple_url, "--cache-dir", str(cache)],
        check=True,
        capture_output=True,
        env=_env(),
        cwd=REPO,
        timeout=120,
    )
    # A reader gone before anything is written (`| head` that has read its lines): the
    # write meets a closed pipe however little stats prints.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "stats", "--cache-dir", str(cache)],
            stdout=writer,
            capture_output=False,
            stderr=subprocess.PIPE,
            env=_env(),
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(writer)
    err = done.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert done.returncode == 141, err
