"""Structured log lines: one JSON object a line, for the events an operator follows (requests, analyses).

``log_event`` writes the object as the record's message; the launcher prints these loggers' records as the
bare message, so each line is a JSON document a log shipper can parse without a pattern.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

REQUEST_LOGGER = "app.requests"
ANALYSIS_LOGGER = "app.analyses"


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
