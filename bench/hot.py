"""Hot-cache figures: requests/s with p50/p99 latency for a page of 1,200 files (JSON and HTML,
gzip as pip asks) and a small page, MB/s for a cached 3 MB and 20 MB file; pypi-proxy next to
proxpi and nginx serving the same bytes as static files. The load generator is wrk.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.servers import CACHE, Server, start_nginx
from bench.tree import write_wheel

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
HTML_ACCEPT = "text/html"
# label, project, Accept (None: a file, measured in MB/s with few connections)
CASES: list[tuple[str, str, str | None]] = [
    ("page1200 JSON", "bigpage", PIP_ACCEPT),
    ("page1200 HTML", "bigpage", HTML_ACCEPT),
    ("small JSON", "small", PIP_ACCEPT),
    ("file 3 MB", "wheel3", None),
    ("file 20 MB", "wheel20", None),
]


def hot_tree() -> tuple[Path, dict[str, str]]:
    """The directory the hot figures' upstream serves (made once), and each file project's
    filename."""
    tree = CACHE / "hot-tree"
    files = {"wheel3": "wheel3-1.0-py3-none-any.whl", "wheel20": "wheel20-1.0-py3-none-any.whl"}
    if (tree / ".ready").exists():
        return tree, files
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    for i in range(1200):
        write_wheel(tree, "bigpage", f"1.{i}", mtime=1_700_000_000 + i)
    write_wheel(tree, "small", "1.0")
    write_wheel(tree, "small", "1.1")
    write_wheel(tree, "wheel3", "1.0", payload_size=3 * 1024 * 1024)
    write_wheel(tree, "wheel20", "1.0", payload_size=20 * 1024 * 1024)
    (tree / ".ready").touch()
    return tree, files


@dataclass(frozen=True)
class Wrk:
    rps: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    errors: str


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, accept: str | None, seconds: int, connections: int) -> Wrk:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    args += ["-H", "Accept-Encoding: gzip"]
    if accept:
        args += ["-H", f"Accept: {accept}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if not (rps and transfer and p50 and p99):
        raise RuntimeError(f"wrk's output was not understood:\n{out}")
    unit = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[transfer.group(2)]
    errors = " ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    return Wrk(
        rps=float(rps.group(1)),
        mb_per_s=float(transfer.group(1)) * unit / 1024**2,
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        errors=errors,
    )


def measure(
    upstream: Server,
    starters: dict[str, Callable[[str, Path], Server]],
    files: dict[str, str],
    work: Path,
    seconds: int,
    connections: int,
    nginx_workers: int,
) -> tuple[dict[str, dict[str, Wrk]], dict[str, float]]:
    """wrk figures per case and server, and each server's RSS after its load."""
    servers: dict[str, Server] = {}
    docroot = work / "static"
    docroot.mkdir(parents=True)
    docroot.parent.chmod(0o755)  # nginx workers must read the static tree
    results: dict[str, dict[str, Wrk]] = {}
    rss: dict[str, float] = {}
    try:
        for name, start in starters.items():
            servers[name] = start(upstream.index_url, work / name)
        paths: dict[str, dict[str, str]] = {}
        for name, server in servers.items():
            paths[name] = {}
            for label, project, accept in CASES:
                if accept is None:
                    path = f"{server.file_prefix}/{project}/{files[project]}"
                else:
                    path = f"{server.page_prefix}{project}/"
                paths[name][label] = path
                # Warm the cache; our answers become nginx's static files.
                response = httpx.get(
                    server.base + path, headers={"Accept": accept or "*/*"}, timeout=300
                )
                response.raise_for_status()
                if name == "pypi-proxy":
                    static = docroot / label.replace(" ", "-")
                    static.write_bytes(response.content)
                    if accept:
                        static.with_name(static.name + ".gz").write_bytes(
                            gzip.compress(response.content)
                        )
        if shutil.which("nginx"):
            servers["nginx"] = start_nginx(docroot, nginx_workers)
            paths["nginx"] = {label: "/" + label.replace(" ", "-") for label, _, _ in CASES}
        else:
            print("  (no nginx here: apt-get install nginx for its figures)")
        for label, _project, accept in CASES:
            for name, server in servers.items():
                conns = connections if accept else 4
                figure = wrk(server.base + paths[name][label], accept, seconds, conns)
                if figure.errors:
                    print(f"  warning: {name} {label}: {figure.errors}")
                results.setdefault(label, {})[name] = figure
                value = f"{figure.rps:8.0f} req/s" if accept else f"{figure.mb_per_s:8.0f} MB/s"
                print(
                    f"  {label:<14} {name:<11} {value}  p50 {figure.p50_ms:7.2f} ms  "
                    f"p99 {figure.p99_ms:7.2f} ms",
                    flush=True,
                )
        for name, server in servers.items():
            rss[name] = server.rss_mb()
    finally:
        for server in servers.values():
            server.stop()
    return results, rss
