"""How much work waits and who does it: the queue as operators see it (metrics, readiness)."""

from __future__ import annotations

from dataclasses import dataclass

from app.crud import analyses, workers
from app.db.collections import Database


@dataclass(frozen=True)
class QueueDepth:
    """Analyses waiting and running, over every worker on the database."""

    queued: int
    running: int


async def analysis_queue(database: Database) -> QueueDepth:
    """How many analyses wait in the queue and how many are being run."""
    queued, running = await analyses.count_in_progress(database)
    return QueueDepth(queued, running)


async def live_workers(database: Database) -> int:
    """How many job workers are alive (they say so every few seconds)."""
    return len(await workers.live(database))
