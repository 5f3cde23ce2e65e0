"""Attempts counted in MongoDB (the session's embedded database): parallel reservations each get a count of
their own, so a limit decided from them holds under any burst."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pymongo import AsyncMongoClient

from app.crud import attempt_counts

COLLECTION = "attempt_counts_test"


async def _with_database(database_url: str, work: Any) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_url, tz_aware=True)
    try:
        return await work(client["crud_tests"])
    finally:
        await client.close()


def test_parallel_reservations_each_get_their_own_count(database_url: str) -> None:
    key = f"address:{uuid.uuid4().hex}"

    async def burst(database: Any) -> list[int]:
        reservations = await asyncio.gather(
            *(attempt_counts.reserve(database, COLLECTION, key, 900) for _ in range(30))
        )
        return sorted(reservation.count for reservation in reservations)

    assert asyncio.run(_with_database(database_url, burst)) == list(range(1, 31))


def test_a_reservation_given_back_is_uncounted_and_a_cleared_key_starts_again(database_url: str) -> None:
    key = f"address:{uuid.uuid4().hex}"

    async def counts(database: Any) -> list[int]:
        first = await attempt_counts.reserve(database, COLLECTION, key, 900)
        second = await attempt_counts.reserve(database, COLLECTION, key, 900)
        await attempt_counts.give_back(database, second)
        third = await attempt_counts.reserve(database, COLLECTION, key, 900)
        await attempt_counts.clear(database, third)
        await attempt_counts.give_back(database, first)  # after a clear: nothing to give back, never below zero
        fourth = await attempt_counts.reserve(database, COLLECTION, key, 900)
        return [first.count, second.count, third.count, fourth.count]

    assert asyncio.run(_with_database(database_url, counts)) == [1, 2, 2, 1]
