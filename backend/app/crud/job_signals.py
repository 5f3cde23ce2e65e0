"""Signals that a job was queued, in a capped collection that idle workers tail.

A signal carries no state: the job document is the truth. Losing one (the capped collection wrapped, a worker
was reconnecting) only delays the job until the workers' next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pymongo import CursorType

from app.db.collections import JOB_SIGNALS, Database

# How long the server holds a tailing worker's request open when there is nothing new.
AWAIT_MILLISECONDS = 5_000
# The pause before asking again after a wait that brought nothing: SecantusDB answers a waiting request at any
# write to the database, not only to this collection, so without it a busy database would be asked again at
# every write, by every idle worker. A signal sent meanwhile is kept by the cursor and read after the pause.
REWAIT_SECONDS = 0.1


async def send(database: Database, kind: str) -> None:
    """Tell idle workers a job of ``kind`` (``analysis`` or ``training``) is waiting."""
    await database[JOB_SIGNALS].insert_one({"kind": kind, "at": datetime.now(UTC)})


async def tail(database: Database, *, await_milliseconds: int = AWAIT_MILLISECONDS) -> AsyncIterator[str]:
    """The kinds of the signals sent from now on, as they arrive; ends when the cursor dies (reopen it)."""
    collection = database[JOB_SIGNALS]
    newest = await collection.find_one({}, {"_id": 1}, sort=[("_id", -1)])
    # A tailable cursor whose first batch is empty is dead at once: start at the newest signal, and skip it.
    query: dict[str, Any] = {"_id": {"$gte": newest["_id"]}} if newest else {}
    cursor = collection.find(query, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(await_milliseconds)
    try:
        # Iterating a tailable cursor stops at the first wait that brings nothing, with the cursor still
        # alive: iterate it again, or every signal sent before the tail is reopened is missed.
        while cursor.alive:
            async for document in cursor:
                if newest is None or document["_id"] > newest["_id"]:
                    yield str(document.get("kind", ""))
            await asyncio.sleep(REWAIT_SECONDS)
    finally:
        await cursor.close()
