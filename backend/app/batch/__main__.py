"""``python -m app.batch score``: score CSV and Parquet files on Dask into a folder of Parquet parts.

    python -m app.batch score --model NAME_OR_FOLDER --input 'data/*.parquet' --output scored/
        [--scheduler tcp://host:8786 | --workers N] [--partition-rows N] [--threshold-percentile P]
        [--overwrite] [--connect-timeout SECONDS]

Progress goes to standard error, the summary to standard output (and ``OUTPUT/_summary.json``). Exit status:
0 done, 2 bad input or options (one line on standard error saying what to do), 1 any other failure, 130
interrupted. Whenever it is not 0, nothing was written and an earlier output is as it was.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from distributed import KilledWorker

from app.batch.cluster import MAX_LOCAL_WORKERS
from app.batch.errors import BatchInputError
from app.batch.inputs import DEFAULT_PARTITION_ROWS, MAX_PARTITION_ROWS
from app.batch.job import BatchOptions, run_batch
from app.batch.output import SUMMARY_FILENAME
from app.batch.progress import ProgressLine

MAX_CONNECT_TIMEOUT = 300.0


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:,} is not between {low:,} and {high:,}")
        return value

    return parse


def _number(low: float, high: float, *, inclusive_high: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low < value and (value <= high if inclusive_high else value < high)):
            upper = f"at most {high:g}" if inclusive_high else f"below {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is not above {low:g} and {upper}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line: one command, ``score``."""
    parser = argparse.ArgumentParser(prog="python -m app.batch", description="Batch scoring of large tables on Dask.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser(
        "score",
        help="score CSV and Parquet files into a folder of Parquet parts",
        description="Score every row of the inputs with a trained model; write them, with anomaly_score, "
        f"is_anomaly and top_feature added, as Parquet parts in OUTPUT, and a summary in OUTPUT/{SUMMARY_FILENAME}.",
    )
    score.add_argument(
        "--input", action="append", nargs="+", required=True, metavar="PATH_OR_GLOB",
        help="a .csv or .parquet file, a folder of them, a glob (quote it) or an fsspec URL; repeat as needed",
    )  # fmt: skip
    score.add_argument("--output", required=True, metavar="DIR", help="the folder to write (a local or shared path)")
    score.add_argument(
        "--model", metavar="NAME_OR_FOLDER",
        help="a model's name under MODELS_DIR, or a model folder (default: AUTOENCODER_MODEL_PATH's model)",
    )  # fmt: skip
    where = score.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask cluster's scheduler (tcp://host:8786)")
    where.add_argument(
        "--workers", type=_integer(1, MAX_LOCAL_WORKERS), metavar="N",
        help="worker processes of the local cluster (default: one per core, as memory allows)",
    )  # fmt: skip
    score.add_argument(
        "--partition-rows", type=_integer(1, MAX_PARTITION_ROWS), default=DEFAULT_PARTITION_ROWS, metavar="N",
        help=f"rows per partition, which bound each worker's memory (default {DEFAULT_PARTITION_ROWS:,})",
    )  # fmt: skip
    score.add_argument(
        "--threshold-percentile", type=_number(0, 100, inclusive_high=False), metavar="P",
        help="flag rows above this percentile of the training scores instead of the model's own (0 < P < 100)",
    )  # fmt: skip
    score.add_argument("--overwrite", action="store_true", help="replace an earlier result in OUTPUT")
    score.add_argument(
        "--connect-timeout", type=_number(0, MAX_CONNECT_TIMEOUT, inclusive_high=True), default=10.0,
        metavar="SECONDS", help="how long to wait for --scheduler and its first worker (default 10)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status."""
    arguments = build_parser().parse_args(argv)
    options = BatchOptions(
        inputs=[pattern for group in arguments.input for pattern in group],
        output=arguments.output,
        model=arguments.model,
        scheduler=arguments.scheduler,
        workers=arguments.workers,
        partition_rows=arguments.partition_rows,
        threshold_percentile=arguments.threshold_percentile,
        overwrite=arguments.overwrite,
        connect_timeout=arguments.connect_timeout,
    )
    try:
        summary = run_batch(options, ProgressLine())
    except BatchInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    except KilledWorker as error:
        print(
            f"error: workers kept dying while scoring ({error}); no output written. If they ran out of memory, "
            "lower --partition-rows or run fewer --workers.",
            file=sys.stderr,
        )
        return 1
    except Exception as error:  # a worker lost for good, a filesystem failing: one line, never a half result
        print(f"error: the run failed ({type(error).__name__}: {error}); no output written", file=sys.stderr)
        return 1
    print(summary_text(summary))
    return 0


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as a user reads it at the end of a run."""
    where = "a local cluster" if summary["scheduler"] == "local" else summary["scheduler"]
    workers = summary["workers"]
    loads = summary["model_loads"]
    return "\n".join(
        [
            f"Scored {summary['rows']:,} rows from {len(summary['inputs']):,} file(s) in {summary['seconds']:,.1f} s "
            f"({summary['rows_per_second'] or 0:,} rows/s while scoring) on {where} of {workers} "
            f"worker{'s' if workers != 1 else ''}",
            f"Anomalies: {summary['anomalies']:,} ({summary['anomaly_rate']:.2%}), anomaly_score above "
            f"{summary['threshold']:.6g} (percentile {summary['threshold_percentile']:g} of the training scores)",
            f"Model: {summary['model']}, version {summary['model_version']}, loaded {loads} "
            f"time{'s' if loads != 1 else ''} over {summary['partitions']:,} partition(s)",
            f"Output: {summary['output']} ({len(summary['parts']):,} Parquet part(s); summary in {SUMMARY_FILENAME})",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
