"""Job signals in the session's embedded database: an idle worker's tail delivers a signal however long it has
waited, so a queued job starts at once rather than at the next poll."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient

from app.crud import job_signals
from app.db.collections import ensure_indexes


async def _signals_after_idle_waits(database_url: str, *, idle_seconds: float, await_milliseconds: int) -> list[str]:
    """Tail, stay idle through several empty waits, send two signals, return what the tail delivered."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_url, tz_aware=True)
    database = client["job_signals_tests"]
    await ensure_indexes(database)
    received: list[str] = []

    async def listen() -> None:
        async for kind in job_signals.tail(database, await_milliseconds=await_milliseconds):
            received.append(kind)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(idle_seconds)
        await job_signals.send(database, "analysis")
        await job_signals.send(database, "training")
        for _ in range(100):
            if len(received) == 2 or listener.done():
                break
            await asyncio.sleep(0.02)
        return received
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await client.close()


def test_a_signal_sent_after_several_empty_waits_reaches_the_tail(database_url: str) -> None:
    received = asyncio.run(_signals_after_idle_waits(database_url, idle_seconds=1.0, await_milliseconds=100))
    assert received == ["analysis", "training"]
