"""The launcher: ``python -m app.serve [--workers N] [--job-workers M]`` (what ``make run`` runs).

Once per deployment, not per API process, it resolves the JWT secret (generating a local one under DATA_DIR for
``ENVIRONMENT=local``), starts the embedded database when ``MONGODB_URL`` is unset, starts ``JOB_WORKERS`` job
workers (``python -m app.worker``, default one), hands the database and the secret to the uvicorn processes
through the environment and runs them. On Ctrl-C or SIGTERM the API drains first, then the job workers stop
(their jobs go back to the queue), then the database.
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

import uvicorn

from app.core.config import BACKEND_DIR, MULTIPROCESS_DIR_VARIABLE, Settings, get_settings
from app.core.errors import ConfigurationError
from app.core.security import resolve_jwt_secret
from app.core.structured_log import log_config
from app.db.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from app.jobs.processes import WorkerProcesses

logger = logging.getLogger("app.serve")


def main(argv: list[str] | None = None) -> int:
    """Run the service until interrupted; returns the process exit status."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host, help="interface to listen on (HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port to listen on (PORT)")
    parser.add_argument(
        "--workers", type=int, default=settings.web_concurrency,
        help="uvicorn (API) processes (WEB_CONCURRENCY)",
    )  # fmt: skip
    parser.add_argument(
        "--job-workers", type=int, default=settings.job_workers,
        help="job worker processes to run beside the API (JOB_WORKERS); 0 for an API-only host",
    )  # fmt: skip
    parser.add_argument(
        "--local", action="store_true",
        help="local use (what `make run` passes): ENVIRONMENT defaults to local unless it is configured",
    )  # fmt: skip
    arguments = parser.parse_args(argv)
    if arguments.local and "environment" not in settings.model_fields_set:
        os.environ["ENVIRONMENT"] = "local"
        settings = settings.model_copy(update={"environment": "local"})
    logging_config = log_config()
    logging.config.dictConfig(logging_config)
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
            processes = arguments.workers + arguments.job_workers
            with _shared_metrics(settings, processes), WorkerProcesses(arguments.job_workers, BACKEND_DIR):
                uvicorn.run(
                    "app.main:app",
                    host=arguments.host,
                    port=arguments.port,
                    workers=arguments.workers,
                    log_config=logging_config,
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


@contextlib.contextmanager
def _shared_metrics(settings: Settings, processes: int) -> Iterator[None]:
    """With several processes (API and job workers), have them count their metrics in one folder, so /metrics
    adds them all up. The launcher itself never imports prometheus-client: the API it runs in this process
    (one uvicorn worker) must import it after this variable is set."""
    if processes < 2 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
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
