"""Secrets from files, and none in a worker's environment or command line (the settings a
worker gets: tests/test_compose.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from proxy.errors import SettingsError
from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy

ADMIN, CLIENT, PASSWORD = "adm-s3cret-456", "tok-s3cret-123", "up-p4ss-789"
ODD_PASSWORD = "up/p@ss:789"  # needs percent-encoding in the URL


def write(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_secrets__files_fill_settings_newline_stripped(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {"PYPI_PROXY_UPSTREAM_PASSWORD_FILE": write(tmp_path / "pw", ODD_PASSWORD + "\n")},
        {
            "upstream": "https://ci@index.invalid/simple/",
            "admin_token_file": write(tmp_path / "admin", ADMIN + "\r\n"),
            "auth_tokens_file": write(tmp_path / "tokens", f"# ci\n{CLIENT}\n\nother-tok\n"),
        },
    )
    assert settings.admin_token == ADMIN
    assert settings.auth_tokens == (CLIENT, "other-tok")
    assert settings.upstream == "https://ci:up%2Fp%40ss%3A789@index.invalid/simple/"
    parsed = httpx.URL(settings.upstream)
    assert (parsed.username, parsed.password) == ("ci", ODD_PASSWORD)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"admin_token": "x", "admin_token_file": "admin"}, "not both"),
        ({"auth_tokens": "x", "auth_tokens_file": "admin"}, "not both"),
        ({"upstream_password_file": "admin"}, "must name a user"),
        (
            {"upstream": "https://u:p@index.invalid/simple/", "upstream_password_file": "admin"},
            "must name a user and no password",
        ),
        ({"admin_token_file": "missing"}, "cannot read"),
        ({"admin_token_file": "empty"}, "is empty"),
    ],
)
def test_secrets__bad_secret_files_refused(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    write(tmp_path / "admin", ADMIN)
    write(tmp_path / "empty", "\n")
    values = {k: str(tmp_path / v) if k.endswith("_file") else v for k, v in overrides.items()}
    with pytest.raises(SettingsError, match=message):
        load_settings(None, {}, values)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    return found


@pytest.mark.e2e
def test_secrets__workers_hold_no_secret_in_environ_or_cmdline(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.auth = ("ci", PASSWORD)
    private = upstream.simple_url.replace("http://", "http://ci@")
    proxy = SubprocessProxy(
        "--workers",
        "2",
        "--upstream",
        private,
        "--admin-token-file",
        write(tmp_path / "admin", ADMIN + "\n"),
        cache_dir=tmp_path / "c",
        env={
            "PYPI_PROXY_UPSTREAM_PASSWORD_FILE": write(tmp_path / "pw", PASSWORD + "\n"),
            "PYPI_PROXY_AUTH_TOKENS_FILE": write(tmp_path / "tokens", CLIENT + "\n"),
        },
    )
    proxy.env.pop("PYPIPROXY_WORKER_SETTINGS", None)
    with proxy:
        assert proxy.process is not None
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while len(workers) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            workers = [
                pid
                for pid in descendants(proxy.process.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            time.sleep(0.1)
        secrets = [s.encode() for s in (ADMIN, CLIENT, PASSWORD)]
        for pid in [proxy.process.pid, *descendants(proxy.process.pid)]:
            for part in ("environ", "cmdline"):
                seen = Path(f"/proc/{pid}/{part}").read_bytes()
                assert not [s for s in secrets if s in seen], (pid, part)
        # the workers still serve, fetch with the upstream's password, and enforce the tokens
        client, admin = {"authorization": f"Bearer {CLIENT}"}, {"x-admin-token": ADMIN}
        for _ in range(4):  # new connections each time, so both workers are likely asked
            assert httpx.get(proxy.url + "/simple/demo/").status_code == 401
            assert httpx.get(proxy.url + "/simple/demo/", headers=client).status_code == 200
            forget = proxy.url + "/admin/forget/demo"
            assert httpx.post(forget, headers={**client, "x-admin-token": "no"}).status_code == 401
            assert httpx.post(forget, headers={**client, **admin}).status_code == 200
