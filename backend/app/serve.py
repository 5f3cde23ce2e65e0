"""The launcher: ``python -m app.serve [--workers N]`` (what ``make run`` runs).

Once per deployment, not per worker, it resolves the JWT secret (generating a local one under DATA_DIR for
``ENVIRONMENT=local``), starts the embedded database when ``MONGODB_URL`` is unset, hands both to the
uvicorn workers through the environment, runs them, and stops the database after they have drained.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.config
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app.core.config import Settings, get_settings
from app.core.errors import ConfigurationError
from app.core.metrics import MULTIPROCESS_DIR_VARIABLE
from app.core.security import resolve_jwt_secret
from app.core.structured_log import ANALYSIS_LOGGER, REQUEST_LOGGER
from app.db.embedded import EmbeddedDatabase, EmbeddedDatabaseError

logger = logging.getLogger("app.serve")


def main(argv: list[str] | None = None) -> int:
    """Run the service until interrupted; returns the process exit status."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host, help="interface to listen on (HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port to listen on (PORT)")
    parser.add_argument(
        "--workers", type=int, default=settings.web_concurrency,
        help="uvicorn worker processes (WEB_CONCURRENCY); each runs its own analysis runner",
    )  # fmt: skip
    parser.add_argument(
        "--local", action="store_true",
        help="local use (what `make run` passes): ENVIRONMENT defaults to local unless it is configured",
    )  # fmt: skip
    arguments = parser.parse_args(argv)
    if arguments.local and "environment" not in settings.model_fields_set:
        os.environ["ENVIRONMENT"] = "local"
        settings = settings.model_copy(update={"environment": "local"})
    log_config = _log_config()
    logging.config.dictConfig(log_config)
    # SIGTERM (e.g. `kill`, a container stop) unwinds like Ctrl-C, so the database is stopped cleanly.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # TensorFlow's C++ start-up chatter (CPU features, XLA) is noise in a service log; warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        os.environ["JWT_SECRET"] = resolve_jwt_secret(settings)
        with _database_url(settings) as mongodb_url:
            os.environ["MONGODB_URL"] = mongodb_url
            get_settings.cache_clear()
            _announce_when_ready(arguments.host, arguments.port)
            with _shared_metrics(settings, arguments.workers):
                uvicorn.run(
                    "app.main:app",
                    host=arguments.host,
                    port=arguments.port,
                    workers=arguments.workers,
                    log_config=log_config,
                    # The service writes its own structured line per request (app.api.observability).
                    access_log=False,
                    # The service decides who the client is itself, from FORWARDED_ALLOW_IPS
                    # (app.api.client_address); uvicorn would trust X-Forwarded-For from loopback.
                    proxy_headers=False,
                    timeout_graceful_shutdown=30,
                )
    except (ConfigurationError, EmbeddedDatabaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


@contextlib.contextmanager
def _database_url(settings: Settings) -> Iterator[str]:
    if settings.mongodb_url:
        yield settings.mongodb_url
        return
    with EmbeddedDatabase(settings.data_path / "db", settings.data_path / "secantusd.log") as database:
        yield database.url
        logger.info("Stopping the embedded database")


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _log_config() -> dict[str, Any]:
    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "formatters": {**LOGGING_CONFIG["formatters"], "events": {"format": "%(message)s"}},
        "handlers": {
            **LOGGING_CONFIG["handlers"],
            "events": {"formatter": "events", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
        },
        "loggers": dict(LOGGING_CONFIG["loggers"]),
    }
    config["loggers"]["app"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # One JSON document a line, each already carrying its time and level (app.core.structured_log).
    for name in (REQUEST_LOGGER, ANALYSIS_LOGGER):
        config["loggers"][name] = {"handlers": ["events"], "level": "INFO", "propagate": False}
    return config


@contextlib.contextmanager
def _shared_metrics(settings: Settings, workers: int) -> Iterator[None]:
    """With several workers, have them count their metrics in one folder, so /metrics adds them all up."""
    if workers < 2 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        yield
        return
    folder = settings.data_path / f"metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(folder)
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _announce_when_ready(host: str, port: int) -> None:
    """Print where the API is and how to get a token, once it answers (in a thread: uvicorn blocks)."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown_host}:{port}"

    def wait_and_print() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.25)
        else:
            return
        print(_banner(base), flush=True)

    threading.Thread(target=wait_and_print, name="ready-banner", daemon=True).start()


def _banner(base: str) -> str:
    return f"""
================================================================================
Anomaly detection API:  {base}
Interactive docs:       {base}/docs
Readiness:              {base}/ready

Get a token (register once, then log in):
  curl -X POST "{base}/api/auth/register" -H "Content-Type: application/json" \\
    -d '{{"username": "demo", "password": "demo-password"}}'
  export TOKEN=$(curl -s -X POST "{base}/api/auth/token" \\
    -d "username=demo&password=demo-password" \\
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

Then upload and analyze:
  curl -X POST "{base}/api/anomaly/datasets/upload" -H "Authorization: Bearer $TOKEN" -F "file=@test.xlsx"
================================================================================
"""


if __name__ == "__main__":
    sys.exit(main())
