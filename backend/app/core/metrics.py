"""The service's Prometheus metrics, defined once, and their rendering for ``GET /metrics``.

Each uvicorn worker counts in its own memory. With several workers (``--workers N``) the launcher points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before they start, every worker writes its counts there, and
any worker's ``/metrics`` answers the sum over all of them (prometheus-client's multiprocess mode; the
per-process ``process_*`` metrics are left out in that mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.core.config import MULTIPROCESS_DIR_VARIABLE

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ANALYSIS_SECONDS = Histogram(
    "analysis_duration_seconds",
    "Time an analysis took in this process, from claiming it to storing its results, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
ANALYSIS_ROWS_SCORED = Counter("analysis_rows_scored_total", "Rows scored by analyses that completed.")
ANALYSIS_FAILURES = Counter(
    "analysis_failures_total",
    "Analyses that did not complete, by reason: 'error' (marked failed with a reason) or 'database' (the "
    "database failed mid-way; the analysis is retried).",
    ["reason"],
)
for _reason in ("error", "database"):
    ANALYSIS_FAILURES.labels(_reason)  # exported as 0 before the first failure, so alerts can rate() it
ANALYSIS_QUEUE_DEPTH = Gauge(
    "analysis_queue_depth",
    "Analyses waiting to be claimed, over every process on the database (counted when scraped).",
    multiprocess_mode="mostrecent",
)
ANALYSES_RUNNING = Gauge(
    "analyses_running",
    "Analyses being run, over every process on the database (counted when scraped).",
    multiprocess_mode="mostrecent",
)
TRAINING_SECONDS = Histogram(
    "training_duration_seconds",
    "Time a training of a user's model took in this process, from claiming it to recording its version, by outcome.",
    ["outcome"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 3600),
)
LOGIN_FAILURES = Counter("login_failures_total", "Logins refused for a wrong username or password.")
LOGINS_THROTTLED = Counter(
    "logins_throttled_total", "Logins refused unchecked (429) after too many failures for the username or address."
)


def render() -> tuple[bytes, str]:
    """The current metrics in the Prometheus text format, and its content type."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
