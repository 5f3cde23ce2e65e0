"""Speed of the detector alone: the training CLI end to end, model load time and scoring throughput.

    .venv/bin/python benchmarks/detector_speed.py [--rows 50000] [--runs 3] [--output FILE.md]

The data is generated (``app.utils.sample_data``): 20 mixed columns like the seed's (an id, a timestamp, two
text columns, sixteen numbers on scales from 1 to 10,000). Every figure is the median of ``--runs`` runs (at
least five for the in-process timings), with the minimum and maximum beside it.
Targets: the CLI run on 50,000 rows within 60 s with process start; loading within 1 s; scoring 500,000 rows/s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import BACKEND_DIR, machine, timed

from app.utils.sample_data import make_normal_transactions


def summary(seconds: list[float]) -> tuple[float, float, float]:
    return statistics.median(seconds), min(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="detector-speed-"))
    training_csv = workdir / "normal_samples.csv"
    make_normal_transactions(arguments.rows, seed=0).to_csv(training_csv, index=False)
    model_dir = workdir / "AutoEncoder"

    def train_with_cli() -> None:
        subprocess.run(
            [
                sys.executable,
                str(BACKEND_DIR / "train_autoencoder_model.py"),
                str(training_csv),
                "--output-dir",
                str(model_dir),
            ],
            cwd=BACKEND_DIR,
            check=True,
            capture_output=True,
        )

    cli_seconds = timed(train_with_cli, arguments.runs)

    import tensorflow  # noqa: F401  imported once, as the service does at start-up, outside the load timing

    from app.utils.anomaly_detector import TabularAnomalyDetector

    in_process_runs = max(5, arguments.runs)
    load_seconds = timed(lambda: TabularAnomalyDetector.load(model_dir), in_process_runs)
    detector = TabularAnomalyDetector.load(model_dir)
    frame = make_normal_transactions(arguments.rows, seed=1)
    detector.decision_function(frame)  # first call outside the timing, as a loaded service would have done
    score_seconds = timed(lambda: detector.decision_function(frame), in_process_runs)

    rows = [
        (
            f"training CLI, {arguments.rows:,} rows x 20 columns, defaults, process start included (s)",
            *summary(cli_seconds),
            "≤ 60",
        ),
        ("model load, TensorFlow already imported (s)", *summary(load_seconds), "≤ 1"),
        (f"scoring {arguments.rows:,} rows from a DataFrame (s)", *summary(score_seconds), ""),
        (
            "scoring throughput (rows/s)",
            arguments.rows / summary(score_seconds)[0],
            arguments.rows / max(score_seconds),
            arguments.rows / min(score_seconds),
            "≥ 500,000",
        ),
    ]
    lines = [
        f"Detector speed on {machine()}; median of {arguments.runs} CLI runs and {in_process_runs} in-process runs",
        "",
        "| measure | median | min | max | target |",
        "|---|---|---|---|---|",
    ]
    for name, median, low, high, target in rows:
        fmt = "{:,.0f}" if "rows/s" in name else "{:.3f}"
        lines.append(f"| {name} | {fmt.format(median)} | {fmt.format(low)} | {fmt.format(high)} | {target} |")
    report = "\n".join(lines)
    print(report)
    if arguments.output:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
