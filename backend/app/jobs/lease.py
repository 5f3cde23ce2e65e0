"""A claimed job's lease, kept alive while the job runs, and the progress the job reports through it.

The job's own work runs in a thread and sets ``Progress``; the heartbeat, on the event loop, records it and
extends the lease a few times a second at most (every write competes with users' status reads). When the
heartbeat finds the lease gone (another worker took the job over, or it was deleted or cancelled), the next
``Progress.set`` raises ``LeaseLostError`` in the job's thread, which then stops and keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pymongo.errors import PyMongoError

logger = logging.getLogger(__name__)

# Progress writes are at most this frequent.
HEARTBEAT_SECONDS = 0.5


class LeaseLostError(Exception):
    """The job was taken over, deleted or cancelled while this worker ran it: stop and discard this attempt."""


class JobStoppedError(Exception):
    """The job was asked to stop (cancelled by its owner, or what it works on was deleted): ``str()`` says why."""


class Progress:
    """Progress shared between a job's thread (which sets it) and its heartbeat (which records it)."""

    def __init__(self) -> None:
        self.percent = 1
        self.details: dict[str, Any] = {}
        self.lease_lost = False
        self.stop_reason: str | None = None
        self.changed = True

    def set(self, percent: float, **details: Any) -> None:
        """Move progress forward (never back, never to 100 before the results are stored); raise
        ``LeaseLostError`` once the lease is gone (or ``JobStoppedError`` once asked to stop), so the job stops
        at its next step."""
        self.check()
        self.percent = int(min(max(percent, self.percent), 99))
        if details:
            self.details = {**self.details, **details}
        self.changed = True

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease is gone, ``JobStoppedError`` if the job was asked to stop."""
        if self.lease_lost:
            raise LeaseLostError
        if self.stop_reason is not None:
            raise JobStoppedError(self.stop_reason)


Renew = Callable[[Progress], Awaitable[bool]]


@contextlib.asynccontextmanager
async def kept(renew: Renew, lease_seconds: float, progress: Progress) -> AsyncIterator[Progress]:
    """Keep a lease while the block runs: ``renew(progress)`` records progress and extends the lease, returning
    ``False`` once the lease is gone."""
    done = asyncio.Event()
    task = asyncio.create_task(_heartbeat(renew, lease_seconds, progress, done), name="lease-heartbeat")
    try:
        yield progress
    finally:
        done.set()
        task.cancel()
        # A database call cut off by an outage can hold the cancellation back until its own timeout: the loop
        # also stops when it sees ``done``, and the job does not wait for it.
        await asyncio.wait({task}, timeout=lease_seconds)


async def _heartbeat(renew: Renew, lease_seconds: float, progress: Progress, done: asyncio.Event) -> None:
    renewed = time.monotonic()
    interval = min(HEARTBEAT_SECONDS, lease_seconds / 4)
    while not done.is_set():
        await asyncio.sleep(interval)
        if not progress.changed and time.monotonic() - renewed < lease_seconds / 3:
            continue
        progress.changed = False
        try:
            owned = await renew(progress)
        except PyMongoError as error:
            logger.warning("A job's heartbeat failed (%s); retrying", error)
            progress.changed = True
            continue
        if not owned:
            progress.lease_lost = True
            return
        renewed = time.monotonic()
