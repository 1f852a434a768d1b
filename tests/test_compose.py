"""The app as served, composed in proxy.compose, and how a spawned worker gets it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
from starlette.types import ASGIApp, Message

from proxy.compose import build_app
from proxy.settings import Settings, load_settings
from proxy.web.accesslog import AccessLog
from proxy.web.server import ProxyConfig

ADMIN = "adm-s3cret-456"


async def _served(app: ASGIApp, path: str, token: str = "") -> httpx.Response:
    """``path`` asked of ``app`` between its lifespan's startup and shutdown, with no port."""
    to_app, receive = anyio.create_memory_object_stream[Message](4)
    send, from_app = anyio.create_memory_object_stream[Message](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, receive.receive, send.send)

    async with to_app, receive, send, from_app, anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.get(path, headers=headers)
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
    return response


def _worker(config: ProxyConfig, answers: Any) -> None:
    """What a worker process does with the config its supervisor pickled to it: build the app
    in ``load``, then serve; here it answers what it holds and what its /stats says."""
    try:
        config.load()
        app = cast(ASGIApp, config.app)
        stats = anyio.run(_served, app, "/stats", "a").json()
        answers.put((config.settings, type(app).__name__, sorted(stats)))
    except BaseException as exc:
        answers.put(exc)  # seen by the test at once, not after its timeout
        raise


def _settings(tmp_path: Path) -> Settings:
    secret = tmp_path / "admin"
    secret.write_text(ADMIN)
    secret.chmod(0o600)
    return load_settings(
        None,
        {"PYPI_PROXY_PREFETCH__PLATFORMS": "any, manylinux*"},
        {
            "cache_dir": tmp_path / "c",
            "offline": "true",
            "auth_tokens": "a,b",
            "allowed_file_hosts": "Files.Example",
            "admin_token_file": str(secret),
            "max_head_size": "32K",
            "access_log": "true",
        },
    )


def test_compose__a_spawned_worker_sees_the_parents_settings_and_app(tmp_path: Path) -> None:
    """Through multiprocessing's spawn, as uvicorn's supervisor starts workers: a fresh
    interpreter that gets the config by pickle alone. Tuples stay tuples, paths paths, the
    secret read from its file is there, and the app it builds carries the prefetcher."""
    settings = _settings(tmp_path)
    spawn = multiprocessing.get_context("spawn")
    answers = spawn.Queue()
    worker = spawn.Process(target=_worker, args=(ProxyConfig(settings, build_app), answers))
    worker.start()
    try:
        answer = answers.get(timeout=120)
    finally:
        worker.join(timeout=30)
    assert not isinstance(answer, BaseException), answer
    assert worker.exitcode == 0
    seen, app_type, stats = answer
    assert seen == settings
    assert seen.auth_tokens == ("a", "b") and seen.prefetch.platforms == ("any", "manylinux*")
    assert isinstance(seen.cache_dir, Path) and seen.admin_token == ADMIN
    assert app_type == "AccessLog"  # access_log: true
    assert "prefetch" in stats  # prefetch.service's figures: the service was composed in


def test_compose__the_access_log_only_when_asked(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert isinstance(build_app(settings), AccessLog)
    plain = build_app(load_settings(None, {}, {"cache_dir": tmp_path / "c", "offline": "true"}))
    assert not isinstance(plain, AccessLog)
    assert anyio.run(_served, plain, "/health").status_code == 200
