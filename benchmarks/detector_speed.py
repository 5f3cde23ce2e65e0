"""Speed of the detector alone: the training CLI end to end, model load time, scoring throughput and drift cost.

    .venv/bin/python benchmarks/detector_speed.py [--rows 50000] [--runs 3] [--output FILE.md] [--scoring-only]

The data is generated (``app.utils.sample_data``): 20 mixed columns like the seed's (an id, a timestamp, two
text columns, sixteen numbers on scales from 1 to 10,000). Scoring is measured on three tables of ``--rows``
rows: the generated DataFrame as it is (real dates); the same rows written to CSV with a few gaps and read back
with the product's reader (``read_table``: dates as text, text columns as strings), scored by the model the CLI
trained on the CSV; and 20 numeric columns, scored by a model trained on numeric columns only. The drift cost is
the extra time ``score_details`` takes with a drift accumulator (and its report) on the CSV rows.
Every figure is the median of several runs (at least five for the in-process timings, fifteen for scoring),
with the minimum and maximum beside it.
Targets: the CLI run on 50,000 rows within 60 s with process start; loading within 1 s; scoring 1,000,000
rows/s on the CSV and numeric tables; drift adding at most 10 %.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from harness import BACKEND_DIR, Figure, benchmark_arguments, figures_table, timed, write_report

from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.sample_data import make_normal_transactions
from app.utils.table_reader import read_table

SCORING_RUNS = 15
DRIFT_PAIRS = 5
# Cells left empty in the CSV: a few per column, in two numeric columns and one text column.
GAP_SHARE = 0.01
GAP_COLUMNS = ("value3", "value7", "channel")


def train_with_cli(training_file: Path, model_dir: Path) -> None:
    """The one-time training CLI with its defaults, as a user runs it."""
    subprocess.run(
        [sys.executable, str(BACKEND_DIR / "train_autoencoder_model.py"), str(training_file), "--output-dir",
         str(model_dir)],
        cwd=BACKEND_DIR, check=True, capture_output=True,
    )  # fmt: skip


def mixed_csv_rows(rows: int, seed: int) -> pd.DataFrame:
    """Generated rows with a few gaps, written to CSV and read back as an upload is (dates become text)."""
    frame = make_normal_transactions(rows, seed=seed)
    rng = np.random.default_rng(seed)
    for name in GAP_COLUMNS:
        frame.loc[rng.choice(rows, int(GAP_SHARE * rows), replace=False), name] = None
    content = io.BytesIO()
    frame.to_csv(content, index=False)
    return read_table(content.getvalue(), "rows.csv")


def numeric_rows(rows: int, seed: int) -> pd.DataFrame:
    """20 correlated numeric columns on scales from 1 to 10,000."""
    frame = make_normal_transactions(rows, seed=seed, n_columns=24)
    return frame.drop(columns=["id", "timestamp", "region", "channel"])


def scoring_throughput(name: str, score: Callable[[], object], rows: int) -> Figure:
    """Rows per second of ``score()`` over ``SCORING_RUNS`` runs, after one call outside the timing."""
    score()  # first call outside the timing, as a loaded service would have done
    seconds = timed(score, SCORING_RUNS)
    return Figure(name, "rows/s", tuple(rows / run for run in seconds), "≥ 1,000,000")


def drift_cost(detector: TabularAnomalyDetector, frame: pd.DataFrame, runs: int) -> Figure:
    """Per run, how much longer ``score_details`` takes with a drift accumulator and its report (%).

    A run compares the fastest of ``DRIFT_PAIRS`` calls each way, interleaved, so a burst of load on the machine
    does not land on one side only.
    """

    def with_drift() -> None:
        drift = detector.drift_accumulator()
        detector.score_details(frame, drift=drift)
        drift.report()

    with_drift()
    extra = []
    for _ in range(runs):
        without, with_it = [], []
        for _ in range(DRIFT_PAIRS):
            without += timed(lambda: detector.score_details(frame), 1)
            with_it += timed(with_drift, 1)
        extra.append(100 * (min(with_it) / min(without) - 1))
    return Figure(f"drift cost: extra time of scoring {len(frame):,} mixed CSV rows with drift", "%", tuple(extra),
                  "≤ 10")  # fmt: skip


def measure(rows: int, runs: int, scoring_only: bool = False) -> list[Figure]:
    """Training CLI time, model load time, scoring speed and drift cost on ``rows`` generated rows.

    ``scoring_only`` trains with the CLI once, untimed, and measures only the scoring throughputs: the figures
    an earlier version of the detector (without drift) can be measured on, for a before-and-after comparison.
    """
    workdir = Path(tempfile.mkdtemp(prefix="detector-speed-"))
    training_csv = workdir / "normal_samples.csv"
    make_normal_transactions(rows, seed=0).to_csv(training_csv, index=False)
    model_dir = workdir / "AutoEncoder"
    cli_seconds = timed(lambda: train_with_cli(training_csv, model_dir), 1 if scoring_only else runs)

    import tensorflow  # noqa: F401  imported once, as the service does at start-up, outside the load timing

    in_process_runs = max(5, runs)
    load_seconds = [] if scoring_only else timed(lambda: TabularAnomalyDetector.load(model_dir), in_process_runs)
    detector = TabularAnomalyDetector.load(model_dir)
    frame = make_normal_transactions(rows, seed=1)
    detector.decision_function(frame)  # first call outside the timing, as a loaded service would have done
    score_seconds = timed(lambda: detector.decision_function(frame), in_process_runs)
    mixed = mixed_csv_rows(rows, seed=1)
    numeric_detector = TabularAnomalyDetector(random_state=0)
    numeric_detector.train(numeric_rows(10_000, seed=0), epochs=10, verbose=0)
    numeric = numeric_rows(rows, seed=1)
    scoring = [
        Figure(f"detector scoring of {rows:,} rows from a DataFrame", "s", tuple(score_seconds)),
        Figure("detector scoring throughput", "rows/s", tuple(rows / seconds for seconds in score_seconds),
               "≥ 500,000"),
        scoring_throughput("detector scoring throughput, mixed types read from CSV (text dates, gaps)",
                           lambda: detector.decision_function(mixed), rows),
        scoring_throughput("detector scoring throughput, 20 numeric columns",
                           lambda: numeric_detector.decision_function(numeric), rows),
    ]  # fmt: skip
    if scoring_only:
        return scoring
    return [
        Figure(f"training CLI, {rows:,} rows x 20 columns, defaults, with process start", "s", tuple(cli_seconds),
               "≤ 60"),
        Figure("model load, TensorFlow already imported", "s", tuple(load_seconds), "≤ 1"),
        *scoring,
        drift_cost(detector, mixed, in_process_runs),
    ]  # fmt: skip


def main() -> None:
    def scoring_only_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--scoring-only", action="store_true", help="measure the scoring throughputs only")

    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3, more=scoring_only_option)
    figures = measure(arguments.rows, arguments.runs, arguments.scoring_only)
    write_report(figures_table("## Detector speed", figures), arguments.output)


if __name__ == "__main__":
    main()
