"""The progress of a run on standard error: a bar redrawn in place on a terminal, plain lines in a log.

Dask's own ``distributed.progress`` draws on standard output and counts tasks; this counts rows, keeps
standard output for the summary, and writes a log file at most one line per tenth of the work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30
REDRAW_SECONDS = 0.1


class ProgressLine:
    """Reports phases (one line each) and the scoring's progress, in rows and partitions."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self.clock = clock
        self.total_rows = self.total_partitions = 0
        self.rows = self.partitions = 0
        self._started = self._drawn_at = 0.0
        self._reported_tenths = -1
        self._drawn = False

    def note(self, message: str) -> None:
        """A line of its own (a phase starting)."""
        self._clear()
        print(message, file=self.stream, flush=True)

    def start(self, *, total_rows: int, total_partitions: int) -> None:
        """Scoring starts: ``total_rows`` rows in ``total_partitions`` partitions."""
        self.total_rows, self.total_partitions = total_rows, total_partitions
        self._started = self.clock()
        self._show(force=True)

    def advance(self, *, rows: int, partitions: int = 1) -> None:
        """``partitions`` more partitions, holding ``rows`` rows, are scored."""
        self.rows += rows
        self.partitions += partitions
        self._show(force=self.partitions == self.total_partitions)

    def finish(self) -> None:
        """Scoring is over: end the redrawn line."""
        if self._drawn:
            print(file=self.stream, flush=True)
            self._drawn = False

    def _show(self, force: bool) -> None:
        if self.total_rows:
            done = min(1.0, self.rows / self.total_rows)
        else:
            done = self.partitions / self.total_partitions if self.total_partitions else 1.0
        now = self.clock()
        counts = (
            f"{self.partitions:,}/{self.total_partitions:,} partitions, "
            f"{self.rows:,}/{self.total_rows:,} rows, {now - self._started:,.1f} s"
        )
        if self.interactive:
            if force or now - self._drawn_at >= REDRAW_SECONDS:
                filled = round(BAR_WIDTH * done)
                bar = "#" * filled + "-" * (BAR_WIDTH - filled)
                self.stream.write(f"\r\x1b[2Kscoring [{bar}] {done:4.0%}  {counts}")
                self.stream.flush()
                self._drawn, self._drawn_at = True, now
            return
        tenths = int(done * 10)
        if tenths > self._reported_tenths:
            self._reported_tenths = tenths
            print(f"scoring: {done:.0%} ({counts})", file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False
