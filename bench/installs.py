"""Cold and warm installs of the real tree: `pip download` and `uv pip install`, each in a fresh
directory or venv and with no client cache, against an index URL (the look-alike upstream
itself, or a proxy in front of it).

A run that does not end with every distribution of the tree is an error, not a figure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ROOT, Server, clean_env

BIN = Path(sys.executable).parent
CLIENTS = ("pip", "uv")
# The clients write their downloads, venvs and temporary files in memory where it can: on this
# machine's disk, writing the tree's venv costs 28 s against 1.7 s in tmpfs (measured with
# `uv pip install --offline`), and disk noise would drown the network and proxy figures.
_SHM = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private directory in it)
CLIENT_TMP = str(_SHM) if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None


class ClientFailed(RuntimeError):
    pass


def _env() -> dict[str, str]:
    return clean_env(**({"TMPDIR": CLIENT_TMP} if CLIENT_TMP else {}))


def _run(command: list[str], what: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise ClientFailed(f"{what} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def pip_download(index_url: str, requirements: list[str], expected: int) -> float:
    """Seconds for `pip download` of the tree into an empty directory, no cache."""
    dest = Path(tempfile.mkdtemp(prefix="bench-pip-", dir=CLIENT_TMP))
    try:
        seconds = _run(
            [
                *(str(BIN / "python"), "-m", "pip", "download", "--isolated", "--no-cache-dir"),
                *("--disable-pip-version-check", "-q", "-d", str(dest), "-i", index_url),
                *requirements,
            ],
            f"pip download from {index_url}",
        )
        got = len(list(dest.iterdir()))
        if got != expected:
            raise ClientFailed(f"pip download from {index_url}: {got} files, not {expected}")
        return seconds
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def uv_install(index_url: str, requirements: list[str], expected: int) -> float:
    """Seconds for `uv pip install` of the tree into a fresh venv (made before the clock
    starts), no cache."""
    home = Path(tempfile.mkdtemp(prefix="bench-uv-", dir=CLIENT_TMP))
    uv = str(BIN / "uv")
    try:
        subprocess.run(
            [uv, "venv", "--no-config", "-q", "--python", sys.executable, str(home / "venv")],
            env=_env(),
            check=True,
        )
        python = str(home / "venv" / "bin" / "python")
        seconds = _run(
            [
                *(uv, "pip", "install", "--no-config", "--no-cache", "-q", "--python", python),
                *("--index-url", index_url, *requirements),
            ],
            f"uv pip install from {index_url}",
        )
        listed = subprocess.run(
            [uv, "pip", "list", "--no-config", "--python", python, "--format", "freeze"],
            env=clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if len(listed) != expected:
            raise ClientFailed(f"uv from {index_url}: {len(listed)} installed, not {expected}")
        return seconds
    finally:
        shutil.rmtree(home, ignore_errors=True)


RUNNERS: dict[str, Callable[[str, list[str], int], float]] = {
    "pip": pip_download,
    "uv": uv_install,
}


@dataclass
class Figures:
    """Seconds per (target, client, "cold" | "warm"), and each server's RSS after its runs."""

    seconds: dict[tuple[str, str, str], float]
    rss_mb: dict[str, float]


def measure(
    upstream: Server,
    starters: dict[str, Callable[[str, Path], Server]],
    requirements: list[str],
    expected: int,
    work: Path,
    warm_runs: int = 1,
) -> Figures:
    """For each client: direct to the upstream twice (it has no cache: both runs are its
    figure), then for each server, a fresh one with an empty cache, a cold run and
    ``warm_runs`` warm ones (the best kept: noise only ever adds time)."""
    seconds: dict[tuple[str, str, str], float] = {}
    rss: dict[str, float] = {}
    for client in CLIENTS:
        run = RUNNERS[client]
        direct = [run(upstream.index_url, requirements, expected) for _ in range(2)]
        seconds["direct", client, "cold"] = seconds["direct", client, "warm"] = min(direct)
        print(f"  {client:<3} direct       {min(direct):6.2f} s", flush=True)
        for name, start in starters.items():
            cache = work / f"{name}-{client}"
            server = start(upstream.index_url, cache)
            try:
                cold = run(server.index_url, requirements, expected)
                warm = min(run(server.index_url, requirements, expected) for _ in range(warm_runs))
                rss[name] = max(rss.get(name, 0.0), server.rss_mb())
            finally:
                server.stop()
                shutil.rmtree(cache, ignore_errors=True)
            seconds[name, client, "cold"] = cold
            seconds[name, client, "warm"] = warm
            print(f"  {client:<3} {name:<12} cold {cold:6.2f} s  warm {warm:6.2f} s", flush=True)
    return Figures(seconds, rss)
