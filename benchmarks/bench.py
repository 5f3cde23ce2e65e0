"""`make bench`: every speed benchmark in one run, one table, and a chart.

    .venv/bin/python benchmarks/bench.py [--rows 50000] [--runs 3]

Runs, in this order and on one model: the detector alone (``detector_speed``), the API end to end
(``api_speed``), the seed's paths (``seed_paths``), the large file (``big_file``), the results file writers
(``export_speed``, at least 5 runs), batch scoring on Dask (``batch_speed``: 10,000,000 rows, the longest part),
analyses per minute with 1, 2 and 3 job workers (``worker_throughput``), users' trainings against the CLI
(``training_speed``: a ``--big-rows`` training for the worker's peak memory) and the API process without jobs
(``api_process``); then prints one Markdown table with the speedups over the seed's paths, followed by what kept
the CPU busy while the workers ran, and writes it to ``benchmarks/results/bench.md`` and a bar chart of
upload-to-analyzed times to ``benchmarks/results/bench.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import api_process
import api_speed
import batch_speed
import big_file
import detector_speed
import export_speed
import seed_paths
import training_speed
import worker_throughput
from harness import Figure, figures_table, train_model, write_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def ratio(name: str, slower: Figure, faster: Figure) -> Figure:
    """How many times faster ``faster`` is than ``slower``, run by run."""
    return Figure(name, "×", tuple(slow / fast for slow, fast in zip(slower.values, faster.values, strict=False)))


def chart(figures: list[Figure], path: Path) -> None:
    """A horizontal bar chart (log scale) of the upload-to-analyzed medians, with min-max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [figure.name for figure in figures]
    medians = [figure.summary.median for figure in figures]
    errors = [
        [figure.summary.median - figure.summary.low for figure in figures],
        [figure.summary.high - figure.summary.median for figure in figures],
    ]
    colours = ["#2e7d32" if "API upload" in label else "#9e9e9e" for label in labels]
    figure, axes = plt.subplots(figsize=(11, 0.6 * len(figures) + 1.5), constrained_layout=True)
    axes.barh(labels, medians, xerr=errors, color=colours, capsize=3)
    axes.set_xscale("log")
    axes.invert_yaxis()
    axes.set_xlabel("seconds from upload to result (log scale; median, min-max)")
    for position, median in enumerate(medians):
        axes.text(median * 1.08, position, f"{median:.2f} s", va="center")
    axes.set_title("50,000 rows x 20 columns: this service (green) against the seed's paths")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--big-xlsx-rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=10_000_000)
    parser.add_argument("--batch-memory-rows", type=int, default=2_000_000)
    arguments = parser.parse_args()

    model_dir = train_model("bench-model-")
    detector = detector_speed.measure(arguments.rows, arguments.runs)
    api = api_speed.measure(arguments.rows, arguments.runs, model_dir)
    seed = seed_paths.measure(arguments.rows, arguments.runs, model_dir)
    big = big_file.measure(arguments.big_rows, arguments.runs, model_dir, arguments.big_xlsx_rows)
    exports = export_speed.measure(arguments.rows, max(5, arguments.runs))
    batch = batch_speed.measure(
        arguments.batch_rows, arguments.runs, model_dir, memory_rows=arguments.batch_memory_rows
    )
    throughput = worker_throughput.measure(arguments.rows, arguments.runs, model_dir)
    trainings = training_speed.measure(
        training_speed.Workload(arguments.rows, arguments.runs, big_rows=arguments.big_rows), model_dir
    )
    api_alone, tensorflow_note = api_process.measure(arguments.rows, arguments.runs, model_dir)
    ours_csv, ours_xlsx = api[0], api[1]
    naive_csv, naive_xlsx, training = seed
    speedups = [
        ratio("speedup over the naive seed path, CSV", naive_csv, ours_csv),
        ratio("speedup over the naive seed path, XLSX", naive_xlsx, ours_xlsx),
        ratio("speedup over training per upload, CSV", training, ours_csv),
    ]
    figures = api + seed + speedups + detector + big + exports + batch + throughput.figures + trainings + api_alone
    table = figures_table(f"## `make bench` ({arguments.rows:,} rows x 20 columns unless named)", figures)
    report = "\n\n".join([table, throughput.cpu_table, tensorflow_note])
    write_report(report, RESULTS_DIR / "bench.md")
    chart([ours_csv, ours_xlsx, naive_csv, naive_xlsx, training], RESULTS_DIR / "bench.png")


if __name__ == "__main__":
    main()
