"""A real S3 API server on loopback (moto's), started once per test session.

Each test gets its own bucket (fresh, empty), so tests never see each other's objects.
Creating a bucket is one unsigned PUT: moto does not check signatures, and the code under
test signs its own requests through obstore as against any S3.

One gap of moto is closed here: it checks a write's precondition (``If-None-Match``,
``If-Match``) and then writes, with nothing keeping another request out in between, where S3
makes the two one step. Racing writers would then both "win" against moto, so every object
write (PUT, and POST that completes a multipart upload) is run under one lock: what a race
test checks is our code, not moto's gap.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from proxy.s3config import S3Config

ACCESS_KEY_ID = "AKIDTESTPROXY1234567"
SECRET_ACCESS_KEY = "test-secret-never-shown-0123456789abcdef"


_WRITES = ("_key_response_put", "_key_response_post")


def _atomic(write: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    @functools.wraps(write)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return write(*args, **kwargs)

    return locked


class S3Server:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._saved: dict[str, Any] = {}

    def start(self) -> S3Server:
        lock = threading.Lock()
        for name in _WRITES:
            self._saved[name] = getattr(S3Response, name)
            setattr(S3Response, name, _atomic(self._saved[name], lock))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()
        for name, write in self._saved.items():
            setattr(S3Response, name, write)

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"mirror-{secrets.token_hex(6)}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        response.raise_for_status()
        return name

    def config(self, bucket: str, prefix: str = "mirror") -> S3Config:
        return S3Config(
            bucket=bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        )


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="s3_config")
def s3_config_fixture(s3_server: S3Server) -> S3Config:
    """A fresh bucket for this test, under the prefix "mirror"."""
    return s3_server.config(s3_server.create_bucket())
