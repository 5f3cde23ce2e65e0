"""Result downloads run in a bounded pool of their own, so exports can never starve the rest of the service.

A process runs at most ``MAX_CONCURRENT_EXPORTS`` exports at once, each in a thread of this pool (never the
default one that logins, uploads and model refreshes use); one more is refused at once with 429 rather than
queued. An export's blocks are made one at a time in its thread as the client reads them. When the download
stops early (the client hung up and Starlette cancelled the stream), the writer is told through a cancel flag
it checks at every chunk, and the slot is free again once the block in progress is done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator
from concurrent.futures import Future, ThreadPoolExecutor

from app.core.errors import TooManyExportsError

# What a refused download is asked to wait: a typical export takes a few seconds.
EXPORT_RETRY_AFTER_SECONDS = 5


class ExportPool:
    """At most ``max_concurrent`` exports at once in this process, each in a thread of the pool's own."""

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="export")
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        """How many slots are taken now."""
        return self._running

    def reserve(self) -> ExportSlot:
        """A slot for one export; ``TooManyExportsError`` (429) when all are taken."""
        with self._lock:
            if self._running >= self.max_concurrent:
                raise TooManyExportsError(
                    f"{self.max_concurrent} result downloads are already being prepared on this server, the most "
                    f"it runs at once: try again in {EXPORT_RETRY_AFTER_SECONDS} s.",
                    EXPORT_RETRY_AFTER_SECONDS,
                )
            self._running += 1
        return ExportSlot(self)

    def shutdown(self) -> None:
        """Stop taking work (at the end of the process's life)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, blocks: Generator[bytes, None, None]) -> Future[bytes | None]:
        return self._executor.submit(next, blocks, None)

    def _free(self) -> None:
        with self._lock:
            self._running -= 1


class ExportSlot:
    """One reserved export: streams its blocks from the pool's threads, and gives the slot back once.

    ``cancelled`` is the flag the writer checks at every chunk.
    """

    def __init__(self, pool: ExportPool) -> None:
        self.cancelled = threading.Event()
        self._pool = pool
        self._blocks: Generator[bytes, None, None] | None = None
        self._in_progress: Future[bytes | None] | None = None
        self._lock = threading.Lock()
        self._freed = False

    async def stream(self, blocks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
        """``blocks``, each made in a thread of the pool; the slot is released when the stream ends, however
        it ends (a cancelled stream first sets ``cancelled``, so the writer stops at its next chunk)."""
        self._blocks = blocks
        try:
            while not self.cancelled.is_set():
                self._in_progress = self._pool._submit(blocks)
                block = await asyncio.wrap_future(self._in_progress)
                if block is None:
                    return
                yield block
        finally:
            self.release()

    def release(self) -> None:
        """Stop the export and give its slot back once the block in progress (if any) is done (idempotent)."""
        self.cancelled.set()
        in_progress = self._in_progress
        if in_progress is not None and not in_progress.done():
            # The writer is still in a chunk: the slot is free once it has noticed the flag.
            in_progress.add_done_callback(lambda _: self._finish())
        else:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._freed:
                return
            self._freed = True
        if self._blocks is not None:
            self._blocks.close()  # not running now: closes the writer's temporary files
        self._pool._free()
