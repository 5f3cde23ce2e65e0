"""Speed of the results file writers alone: the .xlsx and CSV of an analysed table, from its stored snapshot.

    .venv/bin/python benchmarks/export_speed.py [--rows 50000] [--runs 5] [--output FILE.md]

The table is generated (20 mixed columns like the seed's) and stored as an upload stores it; the writers add
the three result columns, so each row has 23 cells. Each figure is the wall-clock time of ``--runs`` complete
writes (every block made and counted), median with min-max, in this process and in one thread, as the
service's export pool runs them; the .xlsx also with the CPU time it took (which other load on the machine
does not stretch). For reference, the same cells appended to an openpyxl write-only workbook
(what exports used before; at most 3 runs, it is slow). Target: the .xlsx of 50,000 rows within 1.5 s.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
from harness import Figure, benchmark_arguments, figures_table, timed, write_report

from app.services.results_export import RowResults, csv_blocks, result_chunks, xlsx_blocks
from app.services.table_snapshot import TableSnapshot, encode_table
from app.utils.sample_data import make_normal_transactions

BASELINE_RUNS = 3


def _written_bytes(blocks: object) -> int:
    return sum(len(block) for block in blocks)  # type: ignore[attr-defined]


def timed_with_cpu(action: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of ``runs`` calls of ``action``."""
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return wall, cpu


def openpyxl_workbook(table: TableSnapshot, results: RowResults) -> None:
    """The same rows appended to an openpyxl write-only workbook saved to a temporary file (the reference)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("results")
    for index, chunk in enumerate(result_chunks(table, results, threading.Event())):
        if index == 0:
            sheet.append(list(chunk.columns))
        for row in chunk.astype(object).where(chunk.notna(), None).itertuples(index=False):
            sheet.append(row)
    with tempfile.TemporaryFile(suffix=".xlsx") as handle:
        workbook.save(handle)


def measure(rows: int, runs: int) -> list[Figure]:
    """Time to write the .xlsx and the CSV of ``rows`` generated rows with their results."""
    table = TableSnapshot(encode_table(make_normal_transactions(rows, seed=5)))
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.0, rows)
    results = RowResults(scores, float(np.quantile(scores, 0.95)), rng.integers(-1, 20, rows).astype(np.int32),
                         [f"value{index}" for index in range(1, 21)])  # fmt: skip
    xlsx, xlsx_cpu = timed_with_cpu(lambda: _written_bytes(xlsx_blocks(table, results, threading.Event())), runs)
    csv = timed(lambda: _written_bytes(csv_blocks(table, results, threading.Event())), runs)
    baseline = timed(lambda: openpyxl_workbook(table, results), min(runs, BASELINE_RUNS))
    return [
        Figure(f"results export, {rows:,} x 20 (+3) XLSX, xlsxwriter constant memory", "s", tuple(xlsx), "≤ 1.5"),
        Figure(f"results export, {rows:,} x 20 (+3) XLSX, CPU time", "s", tuple(xlsx_cpu)),
        Figure(f"results export, {rows:,} x 20 (+3) CSV", "s", tuple(csv)),
        Figure(f"results export, {rows:,} x 20 (+3) XLSX, openpyxl write-only (reference)", "s", tuple(baseline)),
    ]


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=50_000, runs=5)
    write_report(figures_table("## Results export speed", measure(arguments.rows, arguments.runs)),
                 arguments.output)  # fmt: skip


if __name__ == "__main__":
    main()
