"""The command line: ``pypi-proxy serve | prefetch | verify | stats | health`` (``python -m
proxy`` works the same)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.errors import SettingsError
from proxy.healthcheck import add_arguments as add_health_arguments
from proxy.healthcheck import run as health
from proxy.logs import setup_logging
from proxy.settings import ENV_PREFIX, Settings, load_settings

log = logging.getLogger("proxy")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool cut off by `| head`
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C before a command could answer it itself
EXIT_CANNOT_LISTEN = 3  # as uvicorn's startup failure, which a port in use gave before


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (see config.yaml)")
    parser.add_argument("--cache-dir", dest="cache_dir", help="where pages and files are kept")
    parser.add_argument(
        "--storage", help="s3://bucket/prefix to keep files in a bucket (default: --cache-dir)"
    )
    parser.add_argument(
        "--upstream", help="the upstream's simple index URL, like pip's --index-url"
    )
    parser.add_argument(
        "--log-format", dest="log_format", help="text, or json (one object per line)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypi-proxy", description="A caching pull-through proxy for the Python package index."
    )
    parser.add_argument("--version", action="version", version=f"pypi-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy")
    _common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port")
    serve.add_argument(
        "--offline",
        action="store_const",
        const=True,
        default=None,
        help="never contact the upstream; serve only what the cache holds",
    )
    serve.add_argument(
        "--index-ttl", dest="index_ttl", help="seconds a page is served before it is revalidated"
    )
    serve.add_argument(
        "--admin-token",
        dest="admin_token",
        help="token for /admin/ actions (visible to local processes: prefer --admin-token-file)",
    )
    serve.add_argument(
        "--admin-token-file",
        dest="admin_token_file",
        help="file holding the admin token (its trailing newline is ignored)",
    )
    serve.add_argument("--workers", help="worker processes sharing the cache")
    serve.add_argument(
        "--max-cache-size",
        dest="max_cache_size",
        help="cap on cached file bytes, e.g. 50G; least recently used go first",
    )
    serve.add_argument(
        "--shutdown-grace",
        dest="shutdown_grace",
        help="seconds running transfers may take to finish on SIGTERM or Ctrl-C",
    )
    serve.add_argument(
        "--accel-redirect",
        dest="accel_redirect",
        metavar="PREFIX",
        help="behind nginx: answer cache hits with X-Accel-Redirect to this internal location",
    )
    serve.add_argument(
        "--access-log",
        dest="access_log",
        action="store_const",
        const=True,
        default=None,
        help="log every request (Apache combined format; fields with --log-format json)",
    )

    prefetch = commands.add_parser(
        "prefetch", help="one pass of the mirror: fetch what changed upstream, for offline use"
    )
    _common(prefetch)
    prefetch.add_argument(
        "--project",
        dest="projects",
        action="append",
        default=[],
        metavar="NAME",
        help="mirror this project (repeatable); default: the config's selection, else everything",
    )

    verify = commands.add_parser(
        "verify", help="check stored files against their recorded hashes; repair or drop"
    )
    _common(verify)
    verify.add_argument(
        "--no-repair",
        dest="repair",
        action="store_false",
        help="drop what is wrong without re-fetching pinned files",
    )
    verify.add_argument(
        "--offline",
        action="store_const",
        const=True,
        default=None,
        help="never contact the upstream",
    )

    stats = commands.add_parser("stats", help="print the cache's figures as JSON")
    _common(stats)

    health = commands.add_parser(
        "health", help="ask the running server's /health (for container health checks)"
    )
    _common(health)
    add_health_arguments(health)
    return parser


def _settings(args: argparse.Namespace, keys: Sequence[str]) -> Settings:
    overrides = {key: getattr(args, key, None) for key in keys}
    config = args.config
    if config is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        config = Path(os.environ[ENV_PREFIX + "CONFIG"])
    return load_settings(config, os.environ, overrides)


def _serve(settings: Settings) -> int:
    from proxy.compose import serve
    from proxy.web.server import CannotListen

    try:
        return serve(settings)
    except CannotListen as exc:
        log.error("%s", exc)  # the one line: nothing started before the socket was had
        return EXIT_CANNOT_LISTEN


def _stats(settings: Settings) -> int:
    from prefetch.runner import status
    from proxy.runtime import reading
    from proxy.stats import summary

    if not settings.cache_dir.is_dir():
        print(f"pypi-proxy: no cache at {settings.cache_dir}", file=sys.stderr)
        return 1
    with reading(settings) as mirror:
        figures = mirror.stored_figures()
        prefetch = status(mirror, None, mirror.held_figures())
    data = summary(
        figures.counters,
        figures.cache,
        {"cache_dir": str(settings.cache_dir), "prefetch": prefetch},
    )
    print(json.dumps(data, indent=2))
    return 0


def _verify(settings: Settings, repair: bool) -> int:
    import anyio

    from proxy.runtime import Runtime
    from proxy.verify import VerifyReport, verify

    if not settings.cache_dir.is_dir():
        print(f"pypi-proxy: no cache at {settings.cache_dir}", file=sys.stderr)
        return 2  # as for bad settings: nothing was checked

    async def run() -> VerifyReport:
        runtime = await Runtime.open(settings)
        try:
            return await verify(runtime, repair=repair)
        finally:
            await runtime.close()

    report = anyio.run(run)
    print(json.dumps({k: v for k, v in vars(report).items()}, indent=2))
    return report.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # a reader gone early (`stats | head`) shows here, not at exit
    except KeyboardInterrupt:
        # Ctrl-C while starting up (or in a command with no handler of its own): no traceback.
        print("pypi-proxy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Quiet, as a shell tool is: point stdout at /dev/null so the interpreter's own flush
        # at exit does not print a second traceback, and exit as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = _settings(
                args,
                [
                    "cache_dir",
                    "storage",
                    "upstream",
                    "host",
                    "port",
                    "offline",
                    "index_ttl",
                    "admin_token",
                    "admin_token_file",
                    "workers",
                    "max_cache_size",
                    "shutdown_grace",
                    "accel_redirect",
                    "access_log",
                    "log_format",
                ],
            )
            setup_logging(settings.log_level, settings.log_format)
            if args.admin_token:
                log.warning(
                    "--admin-token is visible to every local process (ps); "
                    "prefer --admin-token-file or admin_token_file"
                )
            return _serve(settings)  # the storage checked first: one line if unusable
        if args.command == "verify":
            settings = _settings(
                args, ["cache_dir", "storage", "upstream", "offline", "log_format"]
            )
            setup_logging(settings.log_level, settings.log_format)
            return _verify(settings, args.repair)
        settings = _settings(args, ["cache_dir", "storage", "upstream", "log_format"])
        if args.command == "health":
            return health(settings, args.timeout)
        setup_logging(settings.log_level, settings.log_format)
        if args.command == "prefetch":
            from prefetch.command import run

            return run(settings, args.projects)
        return _stats(settings)
    except SettingsError as exc:
        print(f"pypi-proxy: {exc}", file=sys.stderr)
        return 2
