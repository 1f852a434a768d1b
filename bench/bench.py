"""Hot-cache throughput of pypi-proxy next to proxpi and nginx, against the local fake upstream.

Not a test: it prints figures. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fake_upstream import FakeUpstream  # noqa: E402
from tests.support.proxy_server import free_port  # noqa: E402
from tests.support.wheels import make_wheel  # noqa: E402

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
HTML_ACCEPT = "text/html"
PROXPI_VENV = ROOT / "bench" / ".venv-proxpi"


def build_upstream() -> tuple[FakeUpstream, dict[str, str]]:
    fake = FakeUpstream().start()
    for i in range(1200):
        fake.add_dist("bigpage", make_wheel("bigpage", f"1.{i}"))
    fake.add_dist("small", make_wheel("small", "1.0"))
    fake.add_dist("small", make_wheel("small", "1.1"))
    wheel3 = make_wheel("wheel3", "1.0", payload_size=3 * 1024 * 1024)
    wheel20 = make_wheel("wheel20", "1.0", payload_size=20 * 1024 * 1024)
    fake.add_dist("wheel3", wheel3)
    fake.add_dist("wheel20", wheel20)
    return fake, {"wheel3": wheel3.filename, "wheel20": wheel20.filename}


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def wrk(url: str, accept: str | None, seconds: int, connections: int) -> tuple[float, float]:
    """Requests/s and bytes/s from wrk."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", "Accept-Encoding: gzip"]
    if accept:
        args += ["-H", f"Accept: {accept}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    assert m is not None
    unit = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
    if "Non-2xx" in out or "Socket errors" in out:
        print(
            f"    warning: {url}: "
            + " ".join(
                line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket" in line
            )
        )
    return rps, float(m.group(1)) * unit


def start_ours(
    upstream: str, cache: Path, workers: int, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--cache-dir",
            str(cache),
            "--workers",
            str(workers),
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health")
    return proc, base


def ensure_proxpi() -> Path:
    gunicorn = PROXPI_VENV / "bin" / "gunicorn"
    if not gunicorn.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PROXPI_VENV)], check=True)
        subprocess.run(
            [str(PROXPI_VENV / "bin" / "pip"), "install", "-q", "proxpi", "gunicorn"], check=True
        )
    return gunicorn


def start_proxpi(upstream: str, cache: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    gunicorn = ensure_proxpi()
    port = free_port()
    env = dict(
        os.environ,
        PROXPI_INDEX_URL=upstream,
        PROXPI_CACHE_DIR=str(cache),
        PROXPI_LOGGING_LEVEL="WARNING",
        PROXPI_DOWNLOAD_TIMEOUT="30",
    )
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "proxpi.server:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/index/")
    return proc, base


def start_nginx(docroot: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
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
    wait_http(base + "/small.json")
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    fake, files = build_upstream()
    work = Path(tempfile.mkdtemp(prefix="pypi-proxy-bench-"))
    work.chmod(0o755)  # nginx workers must read the static tree
    results: dict[str, dict[str, float]] = {}
    try:
        servers: dict[str, tuple[subprocess.Popen[bytes], str, dict[str, str]]] = {}
        proc, base = start_ours(fake.simple_url, work / "ours", args.workers)
        servers["pypi-proxy"] = (
            proc,
            base,
            {
                "page1200": "/simple/bigpage/",
                "small": "/simple/small/",
                "wheel3": f"/files/wheel3/{files['wheel3']}",
                "wheel20": f"/files/wheel20/{files['wheel20']}",
            },
        )
        if "proxpi" not in skip:
            proc, base = start_proxpi(fake.simple_url, work / "proxpi", args.workers)
            servers["proxpi"] = (
                proc,
                base,
                {
                    "page1200": "/index/bigpage/",
                    "small": "/index/small/",
                    "wheel3": f"/index/wheel3/{files['wheel3']}",
                    "wheel20": f"/index/wheel20/{files['wheel20']}",
                },
            )
        # Warm every cache, and keep our stored bytes for nginx to serve as static files.
        docroot = work / "static"
        docroot.mkdir()
        for name, (_proc, base, paths) in servers.items():
            for key, path in paths.items():
                for accept in (PIP_ACCEPT, HTML_ACCEPT):
                    response = httpx.get(base + path, headers={"Accept": accept}, timeout=120)
                    response.raise_for_status()
                    if name == "pypi-proxy":
                        kind = "json" if "json" in response.headers["content-type"] else "html"
                        target = docroot / (
                            f"{key}.{kind}" if key.startswith(("page", "small")) else key
                        )
                        target.write_bytes(response.content)
        if "nginx" not in skip and shutil.which("nginx"):
            import gzip

            for f in docroot.iterdir():
                if f.suffix in (".json", ".html"):
                    (docroot / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
            proc, base = start_nginx(docroot, args.workers)
            servers["nginx"] = (
                proc,
                base,
                {
                    "page1200": "/page1200.json",
                    "small": "/small.json",
                    "page1200-html": "/page1200.html",
                    "wheel3": "/wheel3",
                    "wheel20": "/wheel20",
                },
            )
        cases = [
            ("page1200 JSON", "page1200", PIP_ACCEPT),
            ("page1200 HTML", "page1200", HTML_ACCEPT),
            ("small JSON", "small", PIP_ACCEPT),
            ("wheel 3 MB", "wheel3", None),
            ("wheel 20 MB", "wheel20", None),
        ]
        for label, key, accept in cases:
            for name, (_proc, base, paths) in servers.items():
                path = paths.get(key)
                if name == "nginx" and accept == HTML_ACCEPT:
                    path = paths.get("page1200-html")
                if path is None:
                    continue
                conns = args.connections if accept else 4
                rps, bps = wrk(base + path, accept, args.duration, conns)
                results.setdefault(label, {})[name] = rps if accept else bps / 1024**2
        for _proc, _base, _paths in servers.values():
            stop(_proc)
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nworkers={args.workers} connections={args.connections} duration={args.duration}s")
    print(
        f"{'case':<16}{'pypi-proxy':>14}{'proxpi':>12}{'nginx':>12}{'vs proxpi':>11}"
        f"{'vs nginx':>10}"
    )
    for label, row in results.items():
        unit = "MB/s" if label.startswith("wheel") else "req/s"
        ours = row.get("pypi-proxy", 0.0)
        cells = [
            f"{row[n]:>10.0f} {unit[:2]}" if n in row else f"{'-':>12}"
            for n in ("pypi-proxy", "proxpi", "nginx")
        ]
        ratios = [
            f"{ours / row[n]:>9.2f}x" if row.get(n) else f"{'-':>10}" for n in ("proxpi", "nginx")
        ]
        print(
            f"{label:<16}{cells[0]:>14}{cells[1]:>12}{cells[2]:>12}{ratios[0]:>11}{ratios[1]:>10}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
