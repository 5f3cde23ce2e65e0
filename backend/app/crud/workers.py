"""The job workers alive now: each says, every few seconds, which deployment model versions it serves.

A worker's document expires (TTL index) once it has been silent for a while, so the collection holds only
live workers; ``served_versions`` is what the sweep for unrunnable analyses and the readiness check ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.db.collections import WORKERS, Database


@dataclass(frozen=True)
class WorkerState:
    """What a worker says of itself."""

    worker_id: str
    host: str
    pid: int
    versions: list[str]
    started_at: datetime


async def announce(database: Database, state: WorkerState, *, silence_seconds: float) -> None:
    """Record that the worker is alive now, with what it serves (its document expires after ``silence_seconds``)."""
    now = datetime.now(UTC)
    await database[WORKERS].replace_one(
        {"_id": state.worker_id},
        {
            "host": state.host,
            "pid": state.pid,
            "versions": state.versions,
            "started_at": state.started_at,
            "seen_at": now,
            "expires_at": now + timedelta(seconds=silence_seconds),
        },
        upsert=True,
    )


async def retire(database: Database, worker_id: str) -> None:
    """Remove a worker that is stopping."""
    await database[WORKERS].delete_one({"_id": worker_id})


async def live(database: Database) -> list[WorkerState]:
    """The workers whose last word has not expired yet (the TTL monitor deletes expired ones only every minute)."""
    cursor = database[WORKERS].find({"expires_at": {"$gt": datetime.now(UTC)}})
    return [
        WorkerState(
            worker_id=str(document["_id"]),
            host=document["host"],
            pid=document["pid"],
            versions=list(document["versions"]),
            started_at=document["started_at"],
        )
        async for document in cursor
    ]
