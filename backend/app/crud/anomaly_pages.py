"""The anomalies of analysed sessions, highest score first, stored a page of items to a document.

Paging reads only the documents a request's range covers, by the ``(session_id, page)`` index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import ObjectId

from app.db.collections import ANOMALY_PAGE_SIZE, ANOMALY_PAGES, Database


async def insert(database: Database, session_id: str, items: list[dict[str, Any]]) -> None:
    """Store ``items`` (already in rank order) for a session."""
    documents = [
        {"session_id": ObjectId(session_id), "page": page, "items": items[start : start + ANOMALY_PAGE_SIZE]}
        for page, start in enumerate(range(0, len(items), ANOMALY_PAGE_SIZE))
    ]
    if documents:
        await database[ANOMALY_PAGES].insert_many(documents)


async def read_range(database: Database, session_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """Items ``offset`` to ``offset + limit`` (exclusive) of a session's anomalies."""
    if limit <= 0:
        return []
    first, last = offset // ANOMALY_PAGE_SIZE, (offset + limit - 1) // ANOMALY_PAGE_SIZE
    cursor = (
        database[ANOMALY_PAGES]
        .find({"session_id": ObjectId(session_id), "page": {"$gte": first, "$lte": last}})
        .sort("page", 1)
    )
    items = [item async for document in cursor for item in document["items"]]
    start = offset - first * ANOMALY_PAGE_SIZE
    return items[start : start + limit]


async def delete_for_sessions(database: Database, session_ids: Iterable[str]) -> None:
    """Remove the anomalies of these sessions."""
    ids = [ObjectId(session_id) for session_id in session_ids]
    if ids:
        await database[ANOMALY_PAGES].delete_many({"session_id": {"$in": ids}})
