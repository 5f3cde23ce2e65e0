"""Attempts counted per key (a username at an address, an address) in fixed time windows, atomically.

Kept in MongoDB, so every process on the database counts together and a restart forgets nothing; each
window's document expires with it (a TTL index), so a collection holds only the current windows. A caller
reserves an attempt first (one atomic increment that answers the new count) and decides from that count, so a
burst of parallel requests cannot all pass a check made before any of them is counted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.db.collections import Database


@dataclass(frozen=True)
class Reservation:
    """One counted attempt: the key's count in its window, this attempt included, and when the window ends."""

    collection: str
    window_id: str
    count: int
    ends_at: datetime


def _window(key: str, window_seconds: int) -> tuple[str, datetime]:
    index = int(datetime.now(UTC).timestamp()) // window_seconds
    return f"{key}:{index}", datetime.fromtimestamp((index + 1) * window_seconds, UTC)


async def reserve(database: Database, collection: str, key: str, window_seconds: int) -> Reservation:
    """Count one attempt for ``key`` in the current window and return the new count."""
    # An atomic increment of the window's document answers the new count; the first attempt of a window makes
    # the document (a no-op if a parallel attempt just did) and increments again. One upserting
    # find_one_and_update would do both, but when several upserts race to create a document some servers
    # (SecantusDB among them) answer no document to the losers.
    for _ in range(3):
        window_id, ends_at = _window(key, window_seconds)
        document = await database[collection].find_one_and_update(
            {"_id": window_id}, {"$inc": {"count": 1}}, return_document=ReturnDocument.AFTER
        )
        if document is not None:
            return Reservation(collection, window_id, document["count"], document["expires_at"])
        with contextlib.suppress(DuplicateKeyError):
            await database[collection].update_one(
                {"_id": window_id}, {"$setOnInsert": {"count": 0, "expires_at": ends_at}}, upsert=True
            )
    raise RuntimeError(f"Could not count an attempt for {key} in {collection}")


async def give_back(database: Database, reservation: Reservation) -> None:
    """Uncount a reserved attempt (never below zero, should the window have been cleared meanwhile)."""
    await database[reservation.collection].update_one(
        {"_id": reservation.window_id, "count": {"$gt": 0}}, {"$inc": {"count": -1}}
    )


async def clear(database: Database, reservation: Reservation) -> None:
    """Forget every attempt of the reservation's key in its window."""
    await database[reservation.collection].delete_one({"_id": reservation.window_id})
