"""The progress line: redrawn in place on a terminal, a few plain lines in a log."""

from __future__ import annotations

import io

from app.batch.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_plain_line_per_tenth_of_the_rows_at_most() -> None:
    log = io.StringIO()
    progress = ProgressLine(log, clock=lambda: 0.0)
    progress.start(total_rows=1000, total_partitions=100)
    for _ in range(100):
        progress.advance(rows=10)
    progress.finish()
    lines = log.getvalue().splitlines()
    assert lines[0] == "scoring: 0% (0/100 partitions, 0/1,000 rows, 0.0 s)"
    assert lines[-1] == "scoring: 100% (100/100 partitions, 1,000/1,000 rows, 0.0 s)"
    assert len(lines) == 11 and "\r" not in log.getvalue()


def test_a_terminal_gets_a_bar_redrawn_in_place_at_most_ten_times_a_second_then_a_line_break() -> None:
    terminal = Terminal()
    now = [0.0]
    progress = ProgressLine(terminal, clock=lambda: now[0])
    progress.start(total_rows=400, total_partitions=4)
    for seconds in (0.01, 0.5, 0.52, 2.0):  # the first and third come too soon after a drawing to be drawn
        now[0] = seconds
        progress.advance(rows=100)
    progress.finish()
    progress.note("next phase")
    text = terminal.getvalue()
    assert text.count("\r\x1b[2Kscoring [") == 3
    assert "\r\x1b[2Kscoring [" + "#" * 15 + "-" * 15 + "]  50%  2/4 partitions, 200/400 rows, 0.5 s" in text
    assert "1/4 partitions" not in text and "3/4 partitions" not in text
    assert text.endswith("] 100%  4/4 partitions, 400/400 rows, 2.0 s\nnext phase\n")
