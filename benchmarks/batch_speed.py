"""Batch scoring on Dask: rows/s over a large Parquet dataset with 1 and 2 workers, beside the detector alone,
and each worker's peak memory, which the partition size bounds whatever the dataset's size.

    .venv/bin/python benchmarks/batch_speed.py [--rows 10000000] [--memory-rows 2000000] [--runs 3]
        [--partition-rows 250000] [--output FILE.md]

The data is the demo schema (``make_normal_transactions``: 20 columns), generated in chunks of 250,000 rows
(one seed per chunk) into Parquet files of at most 1,000,000 rows with row groups of 250,000, and cached in
``$TMPDIR/anomaly-batch-bench/`` for later runs. Each run is the real command (``python -m app.batch score``
with ``--workers N``, a fresh local cluster each time), timed from start to exit, so starting the cluster and
loading the model are included; the summary's own scoring phase is reported too. A worker's peak memory is its
process's peak resident set (VmHWM), as the summary reports it. The detector alone reads the same files a
partition at a time and scores them with ``decision_function`` in one process, its model loaded beforehand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from harness import BACKEND_DIR, Figure, benchmark_arguments, figures_table, train_model, write_report

from app.utils.sample_data import make_normal_transactions

CHUNK_ROWS = 250_000
FILE_ROWS = 1_000_000
DATA_ROOT = Path(tempfile.gettempdir()) / "anomaly-batch-bench"


def dataset(rows: int) -> Path:
    """A folder of Parquet files holding ``rows`` generated rows; made once, then reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = DATA_ROOT / f"transactions-{rows}"
    if (folder / "_complete").is_file():
        return folder
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=DATA_ROOT))
    writer, written = None, 0
    for chunk in range(math.ceil(rows / CHUNK_ROWS)):
        size = min(CHUNK_ROWS, rows - chunk * CHUNK_ROWS)
        frame = make_normal_transactions(size, seed=100 + chunk)
        frame["id"] += chunk * CHUNK_ROWS
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if written % FILE_ROWS == 0:
            if writer is not None:
                writer.close()
            writer = pq.ParquetWriter(staging / f"transactions-{written // FILE_ROWS:03d}.parquet", table.schema)
        assert writer is not None
        writer.write_table(table, row_group_size=CHUNK_ROWS)
        written += size
    if writer is not None:
        writer.close()
    (staging / "_complete").write_text(f"{rows}\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def run_batch(data: Path, model_dir: Path, workers: int, partition_rows: int) -> tuple[float, dict]:
    """One run of the command; its wall-clock seconds and its summary."""
    output = Path(tempfile.mkdtemp(prefix="batch-speed-out-")) / "scored"
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "app.batch", "score", "--model", str(model_dir), "--input", str(data / "*.parquet"),
         "--output", str(output), "--workers", str(workers), "--partition-rows", str(partition_rows)],
        cwd=BACKEND_DIR, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"the batch command failed:\n{completed.stderr[-3000:]}")
    summary = json.loads((output / "_summary.json").read_text())
    shutil.rmtree(output.parent, ignore_errors=True)
    return seconds, summary


def score_in_one_process(data: Path, model_dir: Path, chunk_rows: int) -> tuple[int, float, float]:
    """The detector alone: every file read ``chunk_rows`` rows at a time and scored (run in a fresh process).

    Returns the rows, the seconds of reading and scoring, and the process's peak memory in MB.
    """
    import resource

    import pyarrow.parquet as pq

    sys.path.insert(0, str(BACKEND_DIR))
    from app.utils.anomaly_detector import TabularAnomalyDetector

    detector = TabularAnomalyDetector.load(model_dir)
    rows = 0
    started = time.perf_counter()
    for path in sorted(data.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            rows += len(detector.decision_function(batch.to_pandas()))
    seconds = time.perf_counter() - started
    return rows, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(rows: int, runs: int, model_dir: Path, partition_rows: int = 250_000,
            memory_rows: int = 2_000_000) -> list[Figure]:  # fmt: skip
    """Rows/s with 1 and 2 workers and alone, and the peak memory per worker for ``rows`` and ``memory_rows``."""
    data, small = dataset(rows), dataset(memory_rows)
    end_to_end: dict[int, list[float]] = {1: [], 2: []}
    scoring: dict[int, list[float]] = {1: [], 2: []}
    peak: dict[int, list[float]] = {rows: [], memory_rows: []}
    alone: list[float] = []
    alone_memory: list[float] = []
    for _ in range(runs):
        for workers in (1, 2):
            seconds, summary = run_batch(data, model_dir, workers, partition_rows)
            assert summary["rows"] == rows and summary["model_loads"] == workers
            end_to_end[workers].append(rows / seconds)
            scoring[workers].append(summary["rows_per_second"])
            if workers == 2:
                peak[rows].append(max(worker["peak_memory_mb"] for worker in summary["by_worker"].values()))
        _, summary = run_batch(small, model_dir, 2, partition_rows)
        peak[memory_rows].append(max(worker["peak_memory_mb"] for worker in summary["by_worker"].values()))
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            scored, seconds, memory = pool.submit(score_in_one_process, data, model_dir, partition_rows).result()
        assert scored == rows
        alone.append(rows / seconds)
        alone_memory.append(memory)
    partition = f"partitions of {partition_rows:,} rows"
    return [
        Figure(f"batch command, {rows:,} rows, 1 worker, start to exit", "rows/s", tuple(end_to_end[1])),
        Figure(f"batch command, {rows:,} rows, 2 workers, start to exit", "rows/s", tuple(end_to_end[2])),
        Figure(f"batch scoring phase, {rows:,} rows, 1 worker", "rows/s", tuple(scoring[1])),
        Figure(f"batch scoring phase, {rows:,} rows, 2 workers", "rows/s", tuple(scoring[2])),
        Figure(f"detector alone, one process, {rows:,} rows read in chunks of {partition_rows:,}", "rows/s",
               tuple(alone)),
        Figure(f"peak memory per worker, 2 workers, {rows:,} rows, {partition}", "MB", tuple(peak[rows]), "bounded"),
        Figure(f"peak memory per worker, 2 workers, {memory_rows:,} rows, {partition}", "MB",
               tuple(peak[memory_rows]), "bounded"),
        Figure(f"detector alone, peak memory, {rows:,} rows", "MB", tuple(alone_memory)),
    ]  # fmt: skip


def main() -> None:
    def more(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--partition-rows", type=int, default=250_000)
        parser.add_argument("--memory-rows", type=int, default=2_000_000)

    arguments = benchmark_arguments(__doc__, rows=10_000_000, runs=3, more=more)
    figures = measure(arguments.rows, arguments.runs, train_model("batch-speed-model-"), arguments.partition_rows,
                      arguments.memory_rows)  # fmt: skip
    write_report(figures_table("## Batch scoring on Dask", figures), arguments.output)


if __name__ == "__main__":
    main()
