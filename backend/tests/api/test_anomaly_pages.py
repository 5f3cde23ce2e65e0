"""Stored anomaly pages, against the real embedded database: bounded by size, read by rank range, each attempt's
pages apart from the others'."""

from __future__ import annotations

import asyncio
from typing import Any

import bson
from bson import ObjectId
from pymongo import AsyncMongoClient

from app.crud import anomaly_pages
from app.db.collections import ANOMALY_PAGE_BYTES, ANOMALY_PAGES, ensure_indexes

ATTEMPT = 1


def _wide_items(count: int, cell_bytes: int) -> list[dict[str, Any]]:
    """Ranked anomalies whose rows are big, like those of a table with thousands of columns."""
    return [{"row": rank, "score": 1000.0 - rank, "values": {"note": "x" * cell_bytes}} for rank in range(count)]


async def _store_and_read(database_url: str, items: list[dict[str, Any]], ranges: list[tuple[int, int]]):
    client: AsyncMongoClient = AsyncMongoClient(database_url)
    try:
        database = client["anomaly_pages_test"]
        await ensure_indexes(database)
        session_id = str(ObjectId())
        pages = anomaly_pages.encode_pages(session_id, ATTEMPT, first_page=0, first_rank=0, items=items)
        await anomaly_pages.insert_encoded(database, pages)
        sizes = [
            len(bson.encode(document))
            async for document in database[ANOMALY_PAGES].find({"session_id": ObjectId(session_id)})
        ]
        reads = [
            await anomaly_pages.read_range(database, session_id, ATTEMPT, offset, limit) for offset, limit in ranges
        ]
        return sizes, reads
    finally:
        await client.close()


def test_wide_rows_fill_more_smaller_pages_that_read_back_in_rank_order(database_url: str):
    items = _wide_items(count=300, cell_bytes=100_000)  # 30 MB of anomalies: one 500-item page would not fit

    sizes, reads = asyncio.run(_store_and_read(database_url, items, [(0, 300), (37, 50), (299, 10), (300, 5)]))

    assert len(sizes) > 1
    assert max(sizes) <= ANOMALY_PAGE_BYTES + 200_000
    everything, middle, last, beyond = reads
    assert [item["row"] for item in everything] == list(range(300))
    assert [item["row"] for item in middle] == list(range(37, 87))
    assert [item["row"] for item in last] == [299]
    assert beyond == []


def test_small_rows_share_pages_of_up_to_500(database_url: str):
    sizes, reads = asyncio.run(_store_and_read(database_url, _wide_items(1_200, 10), [(450, 100)]))

    assert len(sizes) == 3
    assert [item["row"] for item in reads[0]] == list(range(450, 550))


async def _two_attempts(database_url: str) -> tuple[list[int], list[int], list[int]]:
    client: AsyncMongoClient = AsyncMongoClient(database_url)
    try:
        database = client["anomaly_pages_test"]
        await ensure_indexes(database)
        session_id = str(ObjectId())
        for attempt, rows in ((1, range(0, 40)), (2, range(100, 130))):
            items = [{"row": row, "score": 1000.0 - row, "values": {}} for row in rows]
            pages = anomaly_pages.encode_pages(session_id, attempt, first_page=0, first_rank=0, items=items)
            await anomaly_pages.insert_encoded(database, pages)
        first = await anomaly_pages.read_range(database, session_id, 1, 0, 100)
        second = await anomaly_pages.read_range(database, session_id, 2, 0, 100)
        await anomaly_pages.delete_other_attempts(database, session_id, kept_attempt=2)
        after = await anomaly_pages.read_range(database, session_id, 1, 0, 100)
        return [item["row"] for item in first], [item["row"] for item in second], [item["row"] for item in after]
    finally:
        await client.close()


def test_each_attempt_reads_only_its_own_pages_and_the_others_can_be_swept(database_url: str):
    first, second, first_after_sweep = asyncio.run(_two_attempts(database_url))

    assert first == list(range(0, 40))
    assert second == list(range(100, 130))
    assert first_after_sweep == []
