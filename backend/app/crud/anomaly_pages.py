"""The anomalies of analysed analyses, highest score first, stored a page of items to a document.

Pages hold up to ``ANOMALY_PAGE_SIZE`` items and ``ANOMALY_PAGE_BYTES`` of BSON, so a very wide table's pages
hold fewer rows. Each page names the attempt that wrote it: an analysis's results are the pages of the attempt
it completed with, so pages a worker wrote after losing its lease are never read (and are swept away).
Pages are encoded to BSON by ``encode_pages`` (in a worker thread, away from the event loop) and inserted as
raw documents, which the driver sends without encoding them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument

from app.db.collections import ANOMALY_PAGE_BYTES, ANOMALY_PAGE_SIZE, ANOMALY_PAGES, Database


def encode_pages(
    analysis_id: str, attempt: int, *, first_page: int, first_rank: int, items: list[dict[str, Any]]
) -> list[RawBSONDocument]:
    """``items`` (already in rank order, the first at ``first_rank``) as encoded page documents, numbered from
    ``first_page``, each bounded by count and by size. Blocking: call it in a thread."""
    documents: list[RawBSONDocument] = []
    page_items: list[bytes] = []
    page_bytes = 0
    first = first_rank

    def close_page() -> None:
        header = {"session_id": ObjectId(analysis_id), "attempt": attempt, "page": first_page + len(documents)}
        documents.append(RawBSONDocument(_page_bson({**header, "first": first}, page_items)))

    for item in items:
        encoded = bson.encode(item)
        if page_items and (len(page_items) == ANOMALY_PAGE_SIZE or page_bytes + len(encoded) > ANOMALY_PAGE_BYTES):
            close_page()
            first, page_items, page_bytes = first + len(page_items), [], 0
        page_items.append(encoded)
        page_bytes += len(encoded)
    if page_items:
        close_page()
    return documents


def _page_bson(fields: dict[str, Any], encoded_items: list[bytes]) -> bytes:
    """A page document whose ``items`` array is joined from already-encoded items (each encoded only once).

    BSON: a document is its int32 length, its elements and a zero byte; an array is a document keyed "0", "1"...
    """
    elements = b"".join(b"\x03" + str(index).encode() + b"\x00" + item for index, item in enumerate(encoded_items))
    array = (len(elements) + 5).to_bytes(4, "little") + elements + b"\x00"
    body = bson.encode(fields)[4:-1] + b"\x04items\x00" + array
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


async def insert_encoded(database: Database, pages: list[RawBSONDocument]) -> None:
    """Store pages made by ``encode_pages``."""
    if pages:
        await database[ANOMALY_PAGES].insert_many(pages)


async def read_range(
    database: Database, analysis_id: str, attempt: int | None, offset: int, limit: int
) -> list[dict[str, Any]]:
    """Items ``offset`` to ``offset + limit`` (exclusive) of an analysis's anomalies, as its ``attempt`` stored them.

    ``attempt`` is ``None`` for analyses stored before pages named their attempt.
    """
    if limit <= 0:
        return []
    pages = database[ANOMALY_PAGES]
    scope = {"session_id": ObjectId(analysis_id), "attempt": attempt}
    # The page holding rank ``offset`` is the last one starting at or before it; two index range reads.
    holding = await pages.find_one({**scope, "first": {"$lte": offset}}, {"first": 1}, sort=[("first", -1)])
    if holding is None:
        return []
    cursor = pages.find({**scope, "first": {"$gte": holding["first"], "$lt": offset + limit}}).sort("first", 1)
    items = [item async for document in cursor for item in document["items"]]
    start = offset - holding["first"]
    return items[start : start + limit]


async def read_ranks(
    database: Database, analysis_id: str, attempt: int | None, ranks: list[int]
) -> list[dict[str, Any]]:
    """The items at these ranks (sorted), as ``attempt`` stored them; one read per page they fall in."""
    pages = database[ANOMALY_PAGES]
    scope = {"session_id": ObjectId(analysis_id), "attempt": attempt}
    found: list[dict[str, Any]] = []
    page: dict[str, Any] | None = None
    for rank in ranks:
        if page is None or not page["first"] <= rank < page["first"] + len(page["items"]):
            page = await pages.find_one({**scope, "first": {"$lte": rank}}, sort=[("first", -1)])
            if page is None:
                continue
        if rank - page["first"] < len(page["items"]):
            found.append(page["items"][rank - page["first"]])
    return found


async def delete_for_analyses(database: Database, analysis_ids: Iterable[str]) -> None:
    """Remove every page of these analyses, whichever attempt wrote it."""
    ids = [ObjectId(analysis_id) for analysis_id in analysis_ids]
    if ids:
        await database[ANOMALY_PAGES].delete_many({"session_id": {"$in": ids}})


async def delete_other_attempts(database: Database, analysis_id: str, *, kept_attempt: int) -> None:
    """Remove the pages of an analysis that attempts other than ``kept_attempt`` wrote."""
    await database[ANOMALY_PAGES].delete_many({"session_id": ObjectId(analysis_id), "attempt": {"$ne": kept_attempt}})


async def delete_attempt(database: Database, analysis_id: str, *, attempt: int) -> None:
    """Remove the pages one attempt wrote (it lost its lease, or failed part-way)."""
    await database[ANOMALY_PAGES].delete_many({"session_id": ObjectId(analysis_id), "attempt": attempt})
