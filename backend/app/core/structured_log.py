"""Structured log lines: one JSON object a line, for the events an operator follows (requests, analyses).

``log_event`` writes the object as the record's message; the launcher prints these loggers' records as the
bare message, so each line is a JSON document a log shipper can parse without a pattern.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from uvicorn.config import LOGGING_CONFIG

REQUEST_LOGGER = "app.requests"
ANALYSIS_LOGGER = "app.analyses"
TRAINING_LOGGER = "app.trainings"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as one JSON line (``time``, ``level`` and ``event`` first)."""
    if logger.isEnabledFor(level):
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": logging.getLevelName(level).lower(),
            "event": event,
            **fields,
        }
        logger.log(level, json.dumps(record, default=str, ensure_ascii=False))


def log_config() -> dict[str, Any]:
    """The processes' logging: uvicorn's format on standard error, and the event loggers' JSON lines, bare, on
    standard output (the API, its launcher and the job workers all log this way)."""
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
    for name in (REQUEST_LOGGER, ANALYSIS_LOGGER, TRAINING_LOGGER):
        config["loggers"][name] = {"handlers": ["events"], "level": "INFO", "propagate": False}
    return config
