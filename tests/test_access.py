"""Private deployments: client authentication, the admin token, TLS."""

from __future__ import annotations

import base64
import hashlib
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import httpx
import pytest

from proxy.access import Access, basic_credentials, check_password, parse_htpasswd
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


def test_check_password__schemes(tmp_path: Path) -> None:
    users = parse_htpasswd(htpasswd(tmp_path).read_text())
    assert check_password("bcrypt-pw", users["alice"])
    assert not check_password("nope", users["alice"])
    assert check_password("sha-pw", users["bob"])
    assert not check_password("anything", users["carol"])  # unsupported scheme never matches


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
    path.write_text("dave:plain\n")
    import os

    os.utime(path, (1, 1))
    assert not access.allows(basic)
    assert access.allows("Basic " + base64.b64encode(b"dave:plain").decode())
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
