"""Start and stop what the benchmarks compare: the look-alike upstream, pypi-proxy, proxpi,
devpi-server and nginx, each a process of its own, with its RSS readable while it runs.

The other servers are installed on first use into venvs under ``.cache/bench/`` (built under a
temporary name, renamed into place once they import, so a broken install is never reused).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the machine's pip, uv and proxy settings: clients and servers
    must see only the index they are given (the machine's pip points at local wheel stores)."""
    drop = ("PIP_", "UV_", "PYPI_PROXY_", "PROXPI_", "DEVPI_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (a server's workers), in MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The name in parentheses may hold spaces: the fields after the last ")".
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def venv(name: str, packages: list[str], python: str = sys.executable) -> Path:
    """The bin/ of a venv under .cache/bench with ``packages``, made on first use. Its
    ``.ready`` mark is written last: a venv without it (an interrupted install) is made anew."""
    home = CACHE / f"venv-{name}"
    if (home / ".ready").exists():
        return home / "bin"
    shutil.rmtree(home, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(home)], check=True)
    # The machine's own pip configuration applies: this is an install, not a measurement.
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "-q", *packages]
    subprocess.run(pip, check=True, timeout=1200)
    (home / ".ready").touch()
    return home / "bin"


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str  # scheme, host and port
    index_url: str  # what pip's --index-url gets
    file_prefix: str = ""  # path prefix of /<project>/<filename> for a file (hot figures)
    page_prefix: str = ""  # path prefix of <project>/ for a page (hot figures)
    cleanup: list[Path] = field(default_factory=list)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def start_upstream(
    directory: Path, latency_ms: float, bandwidth_mbit: float, metadata: bool = True
) -> Server:
    command = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--dir",
        str(directory),
        "--latency-ms",
        str(latency_ms),
        "--bandwidth-mbit",
        str(bandwidth_mbit),
    ]
    if not metadata:
        command.append("--no-metadata")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, env=clean_env())
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()  # hashing a big tree takes a while
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"the look-alike upstream did not start: {line}")
    url = line[1]
    base = url.removesuffix("/simple/")
    return Server("upstream", proc, base, url, file_prefix="/packages", page_prefix="/simple/")


def rescan(upstream: Server) -> int:
    """Make the upstream take in files added to its directory; its new serial."""
    return int(httpx.post(upstream.base + "/_bench/rescan", timeout=120).text)


def start_ours(upstream: str, cache: Path, workers: int | None = None, *extra: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    command += ["--upstream", upstream, "--cache-dir", str(cache)]
    if workers is not None:
        command += ["--workers", str(workers)]
    command += extra
    proc = subprocess.Popen(
        command,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    server = Server("pypi-proxy", proc, base, base + "/simple/", "/files", "/simple/")
    wait_http(base + "/health", proc)
    return server


def start_proxpi(upstream: str, cache: Path, workers: int, threads: int) -> Server:
    bin_dir = venv("proxpi", ["proxpi", "gunicorn"])
    port = free_port()
    env = clean_env(
        PROXPI_INDEX_URL=upstream,
        PROXPI_CACHE_DIR=str(cache),
        PROXPI_LOGGING_LEVEL="WARNING",
        PROXPI_DOWNLOAD_TIMEOUT="60",
    )
    command = [str(bin_dir / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "--log-level", "warning"]
    proc = subprocess.Popen(
        [*command, "proxpi.server:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    server = Server("proxpi", proc, base, base + "/index/", "/index", "/index/")
    wait_http(base + "/index/", proc)
    return server


def start_devpi(upstream: str, serverdir: Path) -> Server:
    """devpi-server with one mirror index, ``root/up``, of ``upstream``."""
    bin_dir = venv("devpi", ["devpi-server", "devpi-client"])
    password = "bench"  # noqa: S105 (a throwaway server on loopback, removed after the run)
    env = clean_env()
    subprocess.run(
        [
            str(bin_dir / "devpi-init"),
            "--serverdir",
            str(serverdir),
            "--no-root-pypi",
            *("--root-passwd", password),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    command = [str(bin_dir / "devpi-server"), "--serverdir", str(serverdir)]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    server = Server("devpi", proc, base, base + "/root/up/+simple/", "", "/root/up/+simple/")
    wait_http(base + "/+api", proc)
    client = serverdir.parent / (serverdir.name + "-client")
    server.cleanup.append(client)
    devpi = [str(bin_dir / "devpi"), "--clientdir", str(client)]
    for step in (
        ["use", base],
        ["login", "root", "--password", password],
        ["index", "-c", "root/up", "type=mirror", f"mirror_url={upstream}"],
    ):
        subprocess.run([*devpi, *step], env=env, check=True, capture_output=True)
    return server


def start_nginx(docroot: Path, workers: int) -> Server:
    port = free_port()
    conf = docroot.parent / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes {workers};
daemon off;
pid {docroot.parent}/nginx.pid;
error_log {docroot.parent}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  types {{ application/vnd.pypi.simple.v1+json json; text/html html; }}
  gzip_static on;
  server {{
    listen 127.0.0.1:{port};
    root {docroot};
  }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(docroot.parent)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    server = Server("nginx", proc, base, "", "", "/")
    wait_http(base + "/", proc)
    return server
