"""Running the real proxy for tests: in a thread (fast, inspectable) or as a subprocess (as a
user runs it)."""

from __future__ import annotations

import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from proxy.runtime import Runtime
from proxy.settings import Settings
from proxy.web.app import Service, create_app
from proxy.web.server import ProxyConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadedProxy:
    """The ASGI app under uvicorn (with the guarded protocol, as served) on a loopback port,
    in a background thread."""

    def __init__(self, settings: Settings, services: Sequence[Service] = ()) -> None:
        self.settings = settings
        self.app = create_app(settings, services)
        config = ProxyConfig(
            settings, app=self.app, host="127.0.0.1", port=free_port(), log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{config.port}"

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def start(self) -> ThreadedProxy:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ThreadedProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SubprocessProxy:
    """``python -m proxy serve ...`` exactly as a user would start it."""

    def __init__(
        self,
        *args: str,
        cache_dir: Path,
        env: dict[str, str] | None = None,
        scheme: str = "http",
        verify: ssl.SSLContext | bool = True,
        nofile: int | None = None,
    ) -> None:
        self.nofile = nofile  # the server's open-file limit (soft and hard), to reach it cheaply
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify
        self.log_path = cache_dir.parent / f"proxy-{self.port}.log"
        self.argv = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(self.port),
            "--cache-dir",
            str(cache_dir),
            *args,
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SubprocessProxy:
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log_path.open("ab") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=log, preexec_fn=limit
            )
        try:
            return self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> SubprocessProxy:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.log()}")
            try:
                health = httpx.get(self.url + "/health", timeout=1, verify=self.verify)
                if health.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"proxy did not become healthy: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> SubprocessProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def client_env(tmp: Path) -> dict[str, str]:
    """An environment for pip and uv that ignores this machine's own pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_CACHE_DIR"] = "1"
    env["UV_CACHE_DIR"] = str(tmp / "uv-cache")
    env["UV_NO_CONFIG"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env
