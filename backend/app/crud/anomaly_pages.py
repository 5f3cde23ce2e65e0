"""The anomalies of analysed sessions, highest score first, stored a page of items to a document.

Pages hold up to ``ANOMALY_PAGE_SIZE`` items and ``ANOMALY_PAGE_BYTES`` of BSON, so a very wide table's pages
hold fewer rows. Paging reads only the documents a request's range covers, by the ``(session_id, first)`` index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import bson
from bson import ObjectId

from app.db.collections import ANOMALY_PAGE_BYTES, ANOMALY_PAGE_SIZE, ANOMALY_PAGES, Database


async def insert(database: Database, session_id: str, items: list[dict[str, Any]]) -> None:
    """Store ``items`` (already in rank order) for a session, in pages bounded by count and by size."""
    documents: list[dict[str, Any]] = []
    page_items: list[dict[str, Any]] = []
    page_bytes = 0
    first = 0

    def close_page() -> None:
        documents.append(
            {"session_id": ObjectId(session_id), "page": len(documents), "first": first, "items": page_items}
        )

    for item in items:
        size = len(bson.encode(item))
        if page_items and (len(page_items) == ANOMALY_PAGE_SIZE or page_bytes + size > ANOMALY_PAGE_BYTES):
            close_page()
            first, page_items, page_bytes = first + len(page_items), [], 0
        page_items.append(item)
        page_bytes += size
    if page_items:
        close_page()
    if documents:
        await database[ANOMALY_PAGES].insert_many(documents)


async def read_range(database: Database, session_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """Items ``offset`` to ``offset + limit`` (exclusive) of a session's anomalies."""
    if limit <= 0:
        return []
    pages = database[ANOMALY_PAGES]
    session = ObjectId(session_id)
    # The page holding rank ``offset`` is the last one starting at or before it; two index range reads.
    holding = await pages.find_one(
        {"session_id": session, "first": {"$lte": offset}}, {"first": 1}, sort=[("first", -1)]
    )
    if holding is None:
        return []
    cursor = pages.find({"session_id": session, "first": {"$gte": holding["first"], "$lt": offset + limit}}).sort(
        "first", 1
    )
    items = [item async for document in cursor for item in document["items"]]
    start = offset - holding["first"]
    return items[start : start + limit]


async def delete_for_sessions(database: Database, session_ids: Iterable[str]) -> None:
    """Remove the anomalies of these sessions."""
    ids = [ObjectId(session_id) for session_id in session_ids]
    if ids:
        await database[ANOMALY_PAGES].delete_many({"session_id": {"$in": ids}})
