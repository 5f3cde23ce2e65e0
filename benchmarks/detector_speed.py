"""Speed of the detector alone: the training CLI end to end, model load time and scoring throughput.

    .venv/bin/python benchmarks/detector_speed.py [--rows 50000] [--runs 3] [--output FILE.md]

The data is generated (``app.utils.sample_data``): 20 mixed columns like the seed's (an id, a timestamp, two
text columns, sixteen numbers on scales from 1 to 10,000). Every figure is the median of ``--runs`` runs (at
least five for the in-process timings), with the minimum and maximum beside it.
Targets: the CLI run on 50,000 rows within 60 s with process start; loading within 1 s; scoring 500,000 rows/s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from harness import BACKEND_DIR, Figure, benchmark_arguments, figures_table, timed, write_report

from app.utils.sample_data import make_normal_transactions


def train_with_cli(training_file: Path, model_dir: Path) -> None:
    """The one-time training CLI with its defaults, as a user runs it."""
    subprocess.run(
        [sys.executable, str(BACKEND_DIR / "train_autoencoder_model.py"), str(training_file), "--output-dir",
         str(model_dir)],
        cwd=BACKEND_DIR, check=True, capture_output=True,
    )  # fmt: skip


def measure(rows: int, runs: int) -> list[Figure]:
    """Training CLI time, model load time and scoring speed on ``rows`` generated rows."""
    workdir = Path(tempfile.mkdtemp(prefix="detector-speed-"))
    training_csv = workdir / "normal_samples.csv"
    make_normal_transactions(rows, seed=0).to_csv(training_csv, index=False)
    model_dir = workdir / "AutoEncoder"
    cli_seconds = timed(lambda: train_with_cli(training_csv, model_dir), runs)

    import tensorflow  # noqa: F401  imported once, as the service does at start-up, outside the load timing

    from app.utils.anomaly_detector import TabularAnomalyDetector

    in_process_runs = max(5, runs)
    load_seconds = timed(lambda: TabularAnomalyDetector.load(model_dir), in_process_runs)
    detector = TabularAnomalyDetector.load(model_dir)
    frame = make_normal_transactions(rows, seed=1)
    detector.decision_function(frame)  # first call outside the timing, as a loaded service would have done
    score_seconds = timed(lambda: detector.decision_function(frame), in_process_runs)
    return [
        Figure(f"training CLI, {rows:,} rows x 20 columns, defaults, with process start", "s", tuple(cli_seconds),
               "≤ 60"),
        Figure("model load, TensorFlow already imported", "s", tuple(load_seconds), "≤ 1"),
        Figure(f"detector scoring of {rows:,} rows from a DataFrame", "s", tuple(score_seconds)),
        Figure("detector scoring throughput", "rows/s", tuple(rows / seconds for seconds in score_seconds),
               "≥ 500,000"),
    ]  # fmt: skip


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3)
    figures = measure(arguments.rows, arguments.runs)
    write_report(figures_table("## Detector speed", figures), arguments.output)


if __name__ == "__main__":
    main()
