"""The export pool: a bounded number of exports at once, in threads of its own, each slot given back exactly
once however its download ends (finished, cancelled mid-block, or never started)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator

import pytest

from app.core.errors import TooManyExportsError
from app.services.export_pool import EXPORT_RETRY_AFTER_SECONDS, ExportPool


def _blocks(count: int, made_in: list[str]) -> Generator[bytes, None, None]:
    for index in range(count):
        made_in.append(threading.current_thread().name)
        yield f"block {index}".encode()


async def _drain(stream: object) -> list[bytes]:
    return [block async for block in stream]  # type: ignore[attr-defined]


def test_past_the_limit_an_export_is_refused_with_retry_after() -> None:
    pool = ExportPool(2)
    first, _ = pool.reserve(), pool.reserve()
    with pytest.raises(TooManyExportsError) as refused:
        pool.reserve()
    assert refused.value.retry_after == EXPORT_RETRY_AFTER_SECONDS
    assert "try again in" in str(refused.value)
    first.release()
    pool.reserve()
    assert pool.running == 2


def test_blocks_are_made_in_the_pools_threads_and_a_finished_stream_frees_its_slot() -> None:
    pool = ExportPool(1)
    slot = pool.reserve()
    made_in: list[str] = []
    blocks = asyncio.run(_drain(slot.stream(_blocks(3, made_in))))
    assert blocks == [b"block 0", b"block 1", b"block 2"]
    assert made_in and all(name.startswith("export") for name in made_in)
    assert pool.running == 0
    slot.release()  # again, as the request's clean-up does: still freed once
    assert pool.running == 0


def test_a_slot_whose_stream_never_started_is_freed_by_its_release() -> None:
    pool = ExportPool(1)
    slot = pool.reserve()
    slot.stream(_blocks(3, []))  # a download cancelled before its first block was asked for
    slot.release()
    assert slot.cancelled.is_set() and pool.running == 0


def test_a_cancelled_stream_stops_its_writer_and_frees_the_slot_once_the_block_in_progress_is_done() -> None:
    pool = ExportPool(1)
    slot = pool.reserve()
    in_block, finish_block = threading.Event(), threading.Event()
    closed = threading.Event()

    def slow_blocks() -> Generator[bytes, None, None]:
        try:
            yield b"first"
            in_block.set()
            finish_block.wait(10)  # a chunk being written when the client hangs up
            yield b"second"
            yield b"never asked for"
        finally:
            closed.set()

    async def download_then_hang_up() -> tuple[list[bytes], int]:
        received: list[bytes] = []

        async def read() -> None:
            async for block in slot.stream(slow_blocks()):
                received.append(block)

        reader = asyncio.create_task(read())
        while not in_block.is_set():
            await asyncio.sleep(0.01)
        reader.cancel()  # what Starlette does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await reader
        return received, pool.running

    received, running_during_block = asyncio.run(download_then_hang_up())
    assert received == [b"first"]
    assert slot.cancelled.is_set()
    assert running_during_block == 1  # the writer is still in its block: the slot is not free yet
    finish_block.set()
    deadline = time.monotonic() + 10
    while pool.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.running == 0
    assert closed.wait(10)  # the writer was closed (its temporary files with it)
