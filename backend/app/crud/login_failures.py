"""Counts of failed logins per key (a username at a client address, or an address) in fixed time windows.

Kept in MongoDB, so every process on the database counts together and a restart forgets nothing; each
window's document expires with it (a TTL index), so the collection holds only the current windows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.db.collections import LOGIN_FAILURES, Database


def _window(key: str, window_seconds: int, now: datetime) -> tuple[str, datetime]:
    index = int(now.timestamp()) // window_seconds
    return f"{key}:{index}", datetime.fromtimestamp((index + 1) * window_seconds, UTC)


async def counts(database: Database, keys: list[str], window_seconds: int) -> dict[str, tuple[int, datetime]]:
    """For each key with failures in the current window: how many, and when the window ends."""
    now = datetime.now(UTC)
    windows = {_window(key, window_seconds, now)[0]: key for key in keys}
    cursor = database[LOGIN_FAILURES].find({"_id": {"$in": list(windows)}})
    return {windows[document["_id"]]: (document["count"], document["expires_at"]) async for document in cursor}


async def record(database: Database, keys: list[str], window_seconds: int) -> None:
    """Count one failure for each key in the current window."""
    now = datetime.now(UTC)
    for key in keys:
        window_id, ends_at = _window(key, window_seconds, now)
        await database[LOGIN_FAILURES].update_one(
            {"_id": window_id}, {"$inc": {"count": 1}, "$setOnInsert": {"expires_at": ends_at}}, upsert=True
        )


async def clear(database: Database, key: str, window_seconds: int) -> None:
    """Forget the key's failures in the current window (after a successful login)."""
    await database[LOGIN_FAILURES].delete_one({"_id": _window(key, window_seconds, datetime.now(UTC))[0]})
