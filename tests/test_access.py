"""Private deployments: client authentication, the admin token, TLS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt
import httpx
import pytest

from proxy.access import Access, basic_credentials
from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy, client_env

WHEEL = "/files/demo/demo-1.0-py3-none-any.whl"


def htpasswd(tmp_path: Path) -> Path:
    hashed = bcrypt.hashpw(b"bcrypt-pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    sha = base64.b64encode(hashlib.sha1(b"sha-pw").digest()).decode()
    path = tmp_path / "htpasswd"
    path.write_text(f"# users\nalice:{hashed}\nbob:{{SHA}}{sha}\ncarol:$apr1$x$y\n")
    return path


def test_basic_credentials__garbage() -> None:
    assert basic_credentials("Basic " + base64.b64encode(b"u:p:q").decode()) == ("u", "p:q")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert basic_credentials("Digest x") is None
    assert basic_credentials("Basic \x80") is None  # non-ASCII: a plain ValueError in base64
    assert basic_credentials("Basic " + base64.b64encode(b"\xff:p").decode()) is None


def test_access__tokens_and_reload(tmp_path: Path) -> None:
    path = htpasswd(tmp_path)
    access = Access(path, ["tok-123"])
    basic = "Basic " + base64.b64encode(b"bob:sha-pw").decode()
    assert access.allows(basic)
    assert access.allows("Bearer tok-123")
    assert access.allows("Basic " + base64.b64encode(b"anyone:tok-123").decode())
    assert not access.allows("Bearer wrong")
    assert not access.allows(None)
    dave = base64.b64encode(hashlib.sha1(b"dave-pw").digest()).decode()
    path.write_text(f"dave:{{SHA}}{dave}\n")
    assert not access.allows(basic)
    assert access.allows("Basic " + base64.b64encode(b"dave:dave-pw").decode())
    assert Access(None, []).allows(None)


def test_auth__every_path_but_health(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "c",
            "auth_htpasswd": str(htpasswd(tmp_path)),
            "auth_tokens": ["tok-123"],
            "admin_token": "adm-456",
        },
    )
    with ThreadedProxy(settings) as proxy:
        for path in ("/simple/", "/simple/demo/", WHEEL, "/stats", "/metrics", "/"):
            denied = httpx.get(proxy.url + path)
            assert denied.status_code == 401, path
            assert denied.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(proxy.url + "/health").status_code == 200
        assert (
            httpx.get(proxy.url + "/simple/demo/", auth=("alice", "bcrypt-pw")).status_code == 200
        )
        assert httpx.get(proxy.url + WHEEL, auth=("alice", "wrong")).status_code == 401
        bearer = {"authorization": "Bearer tok-123"}
        assert httpx.get(proxy.url + WHEEL, headers=bearer).status_code == 200
        admin = httpx.post(proxy.url + "/admin/forget/demo", headers=bearer)
        assert admin.status_code == 401  # a client token is not the admin token
        both = {"authorization": "Bearer tok-123", "x-admin-token": "adm-456"}
        assert httpx.post(proxy.url + "/admin/forget/demo", headers=both).status_code == 200
        stats = httpx.get(proxy.url + "/stats", headers=bearer).text
        assert "tok-123" not in stats and "adm-456" not in stats and "bcrypt" not in stats


@pytest.mark.e2e
def test_pip_with_credentials_in_index_url(tmp_path: Path, upstream: FakeUpstream) -> None:
    with SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        cache_dir=tmp_path / "c",
        env={"PYPI_PROXY_AUTH_TOKENS": "tok-123"},
    ) as proxy:
        index = proxy.url.replace("http://", "http://ci:tok-123@") + "/simple/"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--index-url",
                index,
                "--dest",
                str(tmp_path / "d"),
                "demo",
            ],
            env=client_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "tok-123" not in proxy.log()


@pytest.mark.e2e
def test_tls__serves_https(tmp_path: Path, upstream: FakeUpstream) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("openssl is not available to make a test certificate")
    env = {"PYPI_PROXY_TLS_CERTFILE": str(cert), "PYPI_PROXY_TLS_KEYFILE": str(key)}
    trust = ssl.create_default_context(cafile=str(cert))
    with SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        cache_dir=tmp_path / "c",
        env=env,
        scheme="https",
        verify=trust,
    ) as proxy:
        response = httpx.get(proxy.url + "/simple/demo/", verify=trust)
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(proxy.url.replace("https://", "http://") + "/simple/demo/", timeout=5)


def test_tls_settings__need_both_files(tmp_path: Path) -> None:
    from proxy.errors import SettingsError

    with pytest.raises(SettingsError, match="tls_certfile"):
        load_settings(None, {}, {"tls_certfile": str(tmp_path / "x.pem")})
    with pytest.raises(SettingsError, match="auth_htpasswd"):
        load_settings(None, {}, {"auth_htpasswd": str(tmp_path / "missing")})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


DES = "rl0uE2NdX0dpc"  # crypt(3) DES of some password, as `htpasswd -d` writes


def test_access__refused_schemes_never_match_and_are_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"bcrypt-pw", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"eve:{DES}\ncarol:$apr1$x$y\nalice:{hashed}\n")
    with caplog.at_level(logging.WARNING, logger="proxy.access"):
        access = Access(path, [])
        for _ in range(3):
            assert not access.allows(basic("eve", DES))  # the hash is not the password
            assert not access.allows(basic("carol", "$apr1$x$y"))
        assert access.allows(basic("alice", "bcrypt-pw"))
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2, refused
    assert any("DES-crypt" in m and "eve" in m for m in refused)
    assert any("apr1-MD5" in m and "carol" in m for m in refused)


def test_access__unknown_user_costs_as_much_as_a_known_one(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=10)).decode() + "\n")
    access = Access(path, [])

    def seconds(user: str) -> float:
        start = time.perf_counter()
        for i in range(3):  # a new password each time: a repeated wrong pair is remembered
            assert not access.allows(basic(user, f"wrong-{user}-{i}"))
        return time.perf_counter() - start

    known, unknown = seconds("alice"), seconds("nobody")
    assert unknown > 0.5 * known, (known, unknown)
    # A repeated wrong pair is answered from memory: no hashing at all.
    start = time.perf_counter()
    assert not access.allows(basic("alice", "wrong-alice-0"))
    assert time.perf_counter() - start < 0.5 * known / 3


def test_auth__bad_or_missing_htpasswd__401_logged_once(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    path = htpasswd(tmp_path)
    settings = load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "c",
            "auth_htpasswd": str(path),
            "auth_tokens": ["tok-123"],
        },
    )
    bearer = {"authorization": "Bearer tok-123"}

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    def wait_for(status: int) -> None:
        deadline = time.monotonic() + 5  # the file is looked at once a second
        while time.monotonic() < deadline:
            got = httpx.get(proxy.url + "/simple/demo/", auth=("alice", "bcrypt-pw")).status_code
            if got == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"still not {status}")

    with caplog.at_level(logging.INFO), ThreadedProxy(settings) as proxy:
        wait_for(200)
        path.write_bytes(path.read_bytes() + b"mall\xf6ry:{SHA}x\n")  # not UTF-8
        wait_for(401)
        for _ in range(5):
            denied = httpx.get(proxy.url + "/simple/demo/", auth=("alice", "bcrypt-pw"))
            assert denied.status_code == 401
            assert httpx.get(proxy.url + "/simple/demo/", headers=bearer).status_code == 200
        assert len(errors()) == 1 and "not UTF-8 (line 5)" in errors()[0], errors()
        path.unlink()
        wait_for(401)
        time.sleep(1.2)  # more looks at the missing file: still one line
        assert httpx.get(proxy.url + "/simple/demo/", auth=("bob", "sha-pw")).status_code == 401
        assert len(errors()) == 2 and "cannot read htpasswd" in errors()[1], errors()
        htpasswd(tmp_path)
        wait_for(200)
    assert len(errors()) == 2, errors()


RIGHT_COST_12 = "$2b$12$r6NXE6pYGLnn1pndskaDW.RaUImmYoneOSVJFp7fCsc5ypL1qePsC"  # of "right"


def test_auth__password_flood_does_not_delay_tokens(tmp_path: Path, upstream: FakeUpstream) -> None:
    """40 clients send wrong passwords against a cost-12 bcrypt entry for a few seconds; a
    bearer token, a pair already checked and a wrong pair already seen are answered at once.
    Past auth_max_pending checks a client gets 503 with Retry-After, not a place in a queue."""
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{RIGHT_COST_12}\n")
    settings = load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "c",
            "auth_htpasswd": str(path),
            "auth_tokens": ["tok-123"],
            "auth_max_pending": 4,
        },
    )
    with ThreadedProxy(settings) as proxy:
        url = proxy.url + "/simple/demo/"
        assert httpx.get(url, auth=("alice", "right")).status_code == 200
        assert httpx.get(url, auth=("alice", "known-wrong")).status_code == 401
        # The flood's window starts once it answers (a loaded machine may take seconds to get
        # 40 clients going); until then it is open for up to 30 s.
        window = {"stop": time.monotonic() + 30}
        answers: Counter[int] = Counter()
        retry_after: set[str | None] = set()

        async def flood(n: int) -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                for i in range(1000):
                    left = window["stop"] - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        response = await asyncio.wait_for(
                            client.get(url, auth=("alice", f"bad-{n}-{i}")), left
                        )
                    except TimeoutError:
                        return  # the flood is over: do not wait for its last answers
                    answers[response.status_code] += 1
                    if response.status_code == 503:
                        retry_after.add(response.headers.get("retry-after"))
                        await asyncio.sleep(0.05)

        async def all_clients() -> None:
            await asyncio.gather(*(flood(n) for n in range(40)))

        flooding = threading.Thread(target=asyncio.run, args=(all_clients(),))
        flooding.start()
        started = time.monotonic()
        while not answers and time.monotonic() < started + 25:
            time.sleep(0.05)
        assert answers, "the flood never got an answer: nothing was tried"
        stop = window["stop"] = time.monotonic() + 3
        time.sleep(0.5)
        slowest: dict[str, float] = {"bearer": 0.0, "remembered": 0.0, "known-wrong": 0.0}
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop - 0.5:
                for kind, status, kwargs in (
                    ("bearer", 200, {"headers": {"authorization": "Bearer tok-123"}}),
                    ("remembered", 200, {"auth": ("alice", "right")}),
                    ("known-wrong", 401, {"auth": ("alice", "known-wrong")}),
                ):
                    start = time.perf_counter()
                    assert client.get(url, **kwargs).status_code == status
                    slowest[kind] = max(slowest[kind], time.perf_counter() - start)
                time.sleep(0.1)
        flooding.join(timeout=60)
        assert not flooding.is_alive()
        assert max(slowest.values()) < 1.0, slowest
        # Wrong passwords are refused, or turned away once auth_max_pending are checking.
        assert set(answers) <= {401, 503} and answers[503] > 0, answers
        assert retry_after == {"1"}
        assert httpx.get(proxy.url + "/health").status_code == 200


def test_auth_settings__defaults_and_bounds() -> None:
    from proxy.errors import SettingsError

    defaults = load_settings(None, {}, {})
    assert (defaults.auth_check_threads, defaults.auth_max_pending) == (2, 64)
    env = {"PYPI_PROXY_AUTH_CHECK_THREADS": "4", "PYPI_PROXY_AUTH_MAX_PENDING": "10"}
    assert load_settings(None, env, {}).auth_check_threads == 4
    for key in ("auth_check_threads", "auth_max_pending"):
        with pytest.raises(SettingsError, match=key):
            load_settings(None, {}, {key: 0})
