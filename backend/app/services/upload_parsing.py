"""Uploads are parsed in a bounded pool of child processes, never in the API process.

A reader can be made to allocate without bound or to abort the whole process (python-calamine does both on
some 1 KB .xls files), so each upload is parsed by a child (``app.services.upload_parser_process``) whose
address space is limited to ``PARSE_MEMORY_MB`` and which is killed after ``PARSE_TIMEOUT_SECONDS``. A child
that dies or is killed is replaced; the upload that did it is answered 400. ``PARSE_WORKERS`` children parse
at once, up to ``PARSE_QUEUE_LIMIT`` more uploads wait for one (on disk, not in memory), and past that an
upload is refused with 429 and ``Retry-After`` before its body is read. The API process only ever holds a
parse request and its answer (column names, row count, sha256, notes); the parsed table comes back as a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.errors import TooManyRequestsError
from app.services.upload_parser_process import out_of_memory_message
from app.utils.table_reader import ReadLimits, TableReadError

logger = logging.getLogger(__name__)

# A parser that once needed this much memory is replaced after its upload, so its heap starts small again.
RECYCLE_PEAK_RSS_BYTES = 1024 * 2**20
RECYCLE_AFTER_UPLOADS = 100
# Column names come back in one line; the reader caps them at 1 MB, which JSON escaping can double.
_ANSWER_LINE_BYTES = 16 * 2**20
_STOP_SECONDS = 5


@dataclass(frozen=True)
class ParsedUpload:
    """What a parser child found in an upload; its table snapshot is in ``table_path``."""

    sha256: str
    size: int
    columns: list[str]
    row_count: int
    notes: list[str]
    table_path: Path


class _Parser:
    """One child process and how many uploads it has parsed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.uploads = 0

    async def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send one request and wait for its answer; None when the child died before answering."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        self.uploads += 1
        return json.loads(line) if line else None

    async def stop(self) -> None:
        """End the child: closing its stdin ends its loop; a child that does not exit is killed."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, BrokenPipeError, ConnectionResetError):
                assert self.process.stdin is not None
                self.process.stdin.close()
                try:
                    await asyncio.wait_for(self.process.wait(), _STOP_SECONDS)
                except TimeoutError:
                    self.process.kill()
        await self.process.wait()


class UploadParserPool:
    """The API process's parser children: at most ``PARSE_WORKERS`` parse at once, each memory-limited and
    timed out; a crashed or killed child is replaced."""

    def __init__(self, settings: Settings) -> None:
        self.workers = settings.parse_workers
        self.memory_mb = settings.parse_memory_mb
        self.timeout_seconds = settings.parse_timeout_seconds
        self.queue_limit = settings.parse_queue_limit
        self.limits = ReadLimits(
            max_columns=settings.max_columns,
            max_cells=settings.max_cells,
            max_text_bytes=settings.max_text_mb * 2**20,
        )
        self._idle: asyncio.Queue[_Parser] = asyncio.Queue()
        self._all: set[_Parser] = set()
        self._admitted = 0
        self._recent_seconds = 1.0

    async def start(self) -> None:
        """Start the children (they import the readers in the background, before the first upload)."""
        for _ in range(self.workers):
            await self._spawn()

    async def stop(self) -> None:
        """Stop every child."""
        parsers, self._all = list(self._all), set()
        await asyncio.gather(*(parser.stop() for parser in parsers), return_exceptions=True)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a place for one upload from before its body is read until it is parsed and stored.

        Raises ``TooManyRequestsError`` (429) when every parser is busy and ``PARSE_QUEUE_LIMIT`` uploads
        already wait, with a ``Retry-After`` from how long recent uploads took to parse.
        """
        if self._admitted >= self.workers + self.queue_limit:
            waiting = self._admitted - self.workers + 1
            retry_after = max(1, math.ceil(self._recent_seconds * waiting / self.workers))
            raise TooManyRequestsError(
                f"The service is reading {self._admitted} uploads already, as many as it takes at once: send "
                f"this file again in {retry_after} s.",
                retry_after=retry_after,
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def parse(self, path: Path, filename: str, table_path: Path) -> ParsedUpload:
        """Parse the upload at ``path`` in a child and describe it; its snapshot is written to ``table_path``.

        Waits for a free child. Raises ``TableReadError`` (400) for an unreadable table, a file that needs more
        than ``PARSE_MEMORY_MB`` or crashes the parser, and one that takes longer than ``PARSE_TIMEOUT_SECONDS``.
        """
        parser = await self._idle.get()
        while parser.process.returncode is not None:  # ended while idle (killed from outside): not this file's doing
            await self._replace(parser, f"had ended (exit status {parser.process.returncode})")
            parser = await self._idle.get()
        request = {
            "path": str(path),
            "filename": filename,
            "table_path": str(table_path),
            "limits": asdict(self.limits),
        }
        started = time.monotonic()
        try:
            answer = await parser.ask(request, self.timeout_seconds)
        except TimeoutError:
            await self._replace(parser, f"took longer than {self.timeout_seconds:g} s")
            raise TableReadError(
                f"{Path(filename).name!r} took longer than {self.timeout_seconds:g} s to read: split it into "
                "smaller files, or export it as CSV (the fastest format to read). The operator can raise "
                "PARSE_TIMEOUT_SECONDS."
            ) from None
        except BaseException:
            # Cancelled or broken mid-request: what the child is doing is unknown, so it is not reused.
            await self._replace(parser, "was interrupted")
            raise
        self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * (time.monotonic() - started)
        if answer is None:
            await self._replace(parser, f"died (exit status {await parser.process.wait()})")
            raise TableReadError(out_of_memory_message(filename, self.memory_mb))
        if answer["peak_rss_kb"] * 1024 > RECYCLE_PEAK_RSS_BYTES or parser.uploads >= RECYCLE_AFTER_UPLOADS:
            await self._replace(parser, None)
        else:
            self._idle.put_nowait(parser)
        if not answer["ok"]:
            raise TableReadError(answer["error"])
        return ParsedUpload(
            sha256=answer["sha256"],
            size=answer["size"],
            columns=answer["columns"],
            row_count=answer["row_count"],
            notes=answer["notes"],
            table_path=table_path,
        )

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.services.upload_parser_process",
            "--memory-mb",
            str(self.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_ANSWER_LINE_BYTES,
            # One thread per math library: their thread pools would take address space and cores for nothing.
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        parser = _Parser(process)
        self._all.add(parser)
        self._idle.put_nowait(parser)

    async def _replace(self, parser: _Parser, problem: str | None) -> None:
        if problem:
            logger.warning("Upload parser %s %s; starting another", parser.process.pid, problem)
        if parser.process.returncode is None and problem:
            parser.process.kill()
        self._all.discard(parser)
        await asyncio.shield(parser.stop())
        await self._spawn()
